"""The attack stages: embed X's images and the crops with both models, then their public neighbours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dejavu.artifacts import MODELS, kept_crops, load_embeddings, load_split, load_table, models_of, query_sets_of
from dejavu.attack.embed import embed_batches
from dejavu.attack.neighbours import knn
from dejavu.data.augment import eval_images
from dejavu.data.records import index_of_ids
from dejavu.data.sources import crop_batches, image_source
from dejavu.errors import CheckpointError, DataError, ModelError
from dejavu.models.encoder import build_encoder
from dejavu.models.outside import Loaded, check_pair, input_side, load_outside
from dejavu.runs import Run, save_npz
from dejavu.stages.declaration import WHICH_MODELS, Stage, fingerprint
from dejavu.stages.train import TRAIN
from dejavu import distributed
from dejavu.train.checkpoints import load_weights
from dejavu.train.loop import recipe_fingerprint

# Keys of the stages that load the trained weights: the recipe builds the network, attack.epoch picks
# the weights, the input size and cache side decide what it sees.
# (model: an audit's checkpoints and the input they take; None, so in no fingerprint, when dejavu trains.)
ENCODER_KEYS = ("train", "attack.epoch", "data.input_size", "data.image_size", "model")
SPEED_KEYS = {"attack.batch_size": "how many images are embedded at once, not what they embed to"}
ROLES = {"A": "target", "B": "reference"}


def weights_path(run: Run, model: str) -> Path:
    """The weights audited (``attack.epoch``): the final ones, or the checkpoint kept after that epoch."""
    epoch, final = run.config.attack.epoch, run.config.train.epochs
    if not epoch or epoch == final:
        return run.model_dir(model) / "model.safetensors"
    path = run.model_dir(model) / "checkpoints" / f"epoch_{epoch:05d}.safetensors"
    if not path.is_file():
        kept = sorted(int(p.stem.split("_")[1]) for p in path.parent.glob("epoch_*.safetensors"))
        held = f"weights after epochs {kept} and the final ones" if kept else "only the final weights"
        raise CheckpointError(
            f"config key 'attack.epoch' = {epoch}, but '{path.parent}' holds {held} (epoch {final}): the "
            f"checkpoint was deleted or never written. Choose one of those, or train again: dejavu train "
            f"--model {model} --out {run.root}"
        )
    return path


def load_encoder(run: Run, model: str) -> torch.nn.Module:
    """The trained encoder of ``model``, checked to come from this run's recipe and data (in an audit: the
    outside model, see :mod:`dejavu.models.outside`)."""
    c = run.config
    if c.model.audited:
        return load_outside(c, model).encoder
    encoder = build_encoder(c.train, c.data.input_size)
    expected = recipe_fingerprint(c.train, c.data.input_size, run.seeds["train"], fingerprint(TRAIN[model], run))
    load_weights(weights_path(run, model), encoder, {"recipe": expected["recipe"], "data": expected["data"]})
    encoder.eval()
    return encoder


def load_encoders(run: Run) -> dict[str, torch.nn.Module]:
    """Both models' encoders (the target alone in the one-model test); in an audit checked to be of one
    network with equal embedding widths."""
    c = run.config
    if not c.model.audited:
        return {model: load_encoder(run, model) for model in MODELS}
    return {model: item.encoder for model, item in load_outside_models(c, c.attack.layer).items()}


def load_outside_models(config, layer: str) -> dict[str, Loaded]:
    """An audit's models (the target alone in the one-model test), checked to be of one network with equal
    embedding widths at ``layer``."""
    loaded = {model: load_outside(config, model) for model in models_of(config)}
    if "B" in loaded:
        check_pair(loaded["A"], loaded["B"], layer)
    return loaded


def batch_chunks(count: int, batch: int) -> list[np.ndarray]:
    """Positions ``0..count-1`` in consecutive chunks of at most ``batch``."""
    return [np.arange(start, min(start + batch, count)) for start in range(0, count, batch)]


def stored_embeddings(embeddings: np.ndarray, model: str, what: str, dtype: str) -> np.ndarray:
    """float32 (N, D) ``embeddings`` of ``what`` (e.g. "crops of set A") by ``model``, checked finite, as
    ``dtype`` for disk.

    A NaN or infinite row means broken weights or a diverged training: every neighbour search on it
    would be meaningless (NaN distances rank arbitrarily), so the run stops here with a
    :class:`ModelError` rather than reaching a verdict. So does a float16 cast that overflows.

    Example:
        >>> stored_embeddings(np.ones((2, 3), np.float32), "A", "images of set X", "float16").dtype
        dtype('float16')
    """
    who = f"model {model} ({ROLES.get(model, model)})"
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise ModelError(
            f"{who} embeds {int(bad.sum())} of {len(bad)} {what} to NaN or infinite values: its weights "
            f"are broken or its training diverged; retrain with a lower train.lr or a train.grad_clip, in a new --out"
        )
    with np.errstate(over="ignore"):  # an overflow is reported below, as an error rather than a warning
        stored = embeddings.astype(dtype)
    overflow = ~np.isfinite(stored).all(axis=1)
    if overflow.any():
        raise ModelError(
            f"{who}: {int(overflow.sum())} of {len(overflow)} embeddings of the {what} exceed the {dtype} range (largest "
            f"|value| {float(np.abs(embeddings).max()):.3g}, at most {float(np.finfo(dtype).max):g}); store them "
            f"with attack.embedding_dtype=float32"
        )
    return stored


def stage_embed(run: Run) -> Path:
    """Embed X's full images and the kept crops of A, B, T with both models, stored as
    ``attack.embedding_dtype`` (float32 by default: float16 rounding reorders near-tied neighbours).

    Each batch is read (or decoded) once and embedded by both models."""
    table = load_table(run)
    sets = load_split(run, table)
    c = run.config
    encoders = load_encoders(run)
    side = input_side(c)
    public_rows = index_of_ids(table.ids, sets["X"], "split set X")
    source = image_source(table, public_rows, c.data.image_size, c.data.workers)
    chunks = batch_chunks(len(public_rows), c.attack.batch_size)
    device = distributed.device()
    public = embed_batches(encoders, (eval_images(images, side) for images in source.batches(chunks)),
                           c.attack.layer, device)
    dtype = c.attack.embedding_dtype
    stored = {model: stored_embeddings(public[model], model, "images of set X", dtype) for model in encoders}
    for model in encoders:
        save_npz(run.embeddings_dir / f"model_{model}" / "public_X.npz", ids=table.ids[public_rows],
                 labels=table.labels[public_rows], embeddings=stored[model])
    for name in query_sets_of(c):
        ids, squares = kept_crops(run, name, table)
        rows = index_of_ids(table.ids, ids, f"crops of {name}")
        batches = crop_batches(table, rows, squares, side, c.attack.batch_size, c.data.workers)
        crops = embed_batches(encoders, batches, c.attack.layer, device)
        stored = {model: stored_embeddings(crops[model], model, f"crops of set {name}", dtype) for model in encoders}
        for model in encoders:
            save_npz(run.embeddings_dir / f"model_{model}" / f"crops_{name}.npz", ids=ids, embeddings=stored[model])
    return run.embeddings_dir


def stage_neighbours(run: Run) -> Path:
    """Exact k nearest public neighbours of every crop, in each model's own embedding space."""
    c = run.config
    for model in models_of(c):
        public = load_embeddings(run, model, "public_X")
        if c.attack.k > len(public["ids"]):
            # The split checks this too, but a sweep point may adopt a split made for a smaller k.
            raise DataError(
                f"config key 'attack.k' = {c.attack.k} is larger than the public set X ({len(public['ids'])} "
                "images after the split); lower attack.k or raise split.x_per_class"
            )
        for name in query_sets_of(c):
            crops = load_embeddings(run, model, f"crops_{name}", width=public["embeddings"].shape[1])
            distances, rows = knn(crops["embeddings"].astype(np.float32), public["embeddings"].astype(np.float32),
                                  c.attack.k, c.attack.backend)
            save_npz(run.neighbours_dir / f"model_{model}" / f"crops_{name}.npz",
                     ids=crops["ids"], neighbour_ids=public["ids"][rows],
                     neighbour_labels=public["labels"][rows], distances=distances)
    return run.neighbours_dir


EMBED = Stage(
    "embed", stage_embed, reads=("data", "split", "crops", "train_A", "train_B"), keys=("attack.layer", "attack.embedding_dtype", *ENCODER_KEYS),
    seeds=("train",), also_reads=SPEED_KEYS, outputs=("embeddings",),
    description="embed X's full images and the crops of A, B and T with both models, at attack.layer",
)
NEIGHBOURS = Stage(
    "neighbours", stage_neighbours, reads=("embed",), keys=("attack.k", "attack.backend"), outputs=("neighbours",),
    also_reads=WHICH_MODELS,
    description="the k nearest public neighbours (in X) of every crop, in each model's embedding space",
)
