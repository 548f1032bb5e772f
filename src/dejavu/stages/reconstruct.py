"""The reconstruct stage: each model's diffusion decoder draws what it infers from the attacked crops.

The decoders and the judge train on the public set X only (``../shared/PAPER.md``, "Reconstruction"): a
decoder of model m learns to draw X's images from m's frozen embeddings of them (backbone and projector);
at attack time it draws from the mean backbone embedding of a crop's nearest public neighbours and the
crop's own projector embedding. Both models' decoders draw a crop from the same starting noise (a seed
of the crop's id), so their samples differ only by what the models infer.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np
import torch

from dejavu import distributed
from dejavu.artifacts import (
    MODELS, RECONSTRUCTION_COLUMNS, kept_crops, load_neighbours, load_split, load_table, write_csv,
)
from dejavu.attack.embed import embed_batches
from dejavu.attack.vote import confidence, vote
from dejavu.data.augment import MEAN, STD, eval_images, resized, to_float
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.data.scenes import ScenesDataset
from dejavu.data.sources import crop_batches, image_source
from dejavu.models.outside import input_side
from dejavu.reconstruct.colour import class_hues, colour_labels
from dejavu.reconstruct.conditions import attack_conditions, training_conditions
from dejavu.reconstruct.decoder import DecoderSettings
from dejavu.reconstruct.diffusion import fit_decoder, sample
from dejavu.reconstruct.grids import write_grid
from dejavu.reconstruct.judge import fit_judge, judge_labels, judge_quality
from dejavu.reconstruct.scoring import sample_shares
from dejavu.runs import Run, save_npz, write_json
from dejavu.stages.attack import ENCODER_KEYS, ROLES, SPEED_KEYS, batch_chunks, load_encoders
from dejavu.stages.declaration import Stage
from dejavu.train.checkpoints import save_weights

SETS = ("A", "B", "T")
FIDELITY_IMAGES = 100  # X images drawn back from their own embeddings: does the decoder follow its condition?
GRID_ROWS = 100  # crops drawn in grid_<set>.png (the first in the table's order)


def decoder_settings(config) -> DecoderSettings:
    """The decoder's settings: the ``reconstruct.*`` keys of the same names."""
    names = [item.name for item in dataclasses.fields(DecoderSettings)]
    return DecoderSettings(**{name: getattr(config.reconstruct, name) for name in names})


def child_seeds(seed: int) -> dict[str, int]:
    """Independent seeds of the judge, each model's decoder, and the sampling noise."""
    names = ("judge", "A", "B", "sampling", "fidelity")  # spawn keeps earlier children: append, never insert
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(names, children)}


def crop_seed(sampling_seed: int, crop_id: str) -> int:
    """The starting noise of a crop's samples: from its id, so that it does not depend on which crops are drawn."""
    return int(np.random.SeedSequence([sampling_seed, zlib.crc32(str(crop_id).encode())]).generate_state(1)[0])


def resized01(images_uint8: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, side, side) in [0, 1] (antialiased)."""
    return resized(to_float(images_uint8), side).clamp(0, 1)


def full_images(run: Run, table: ImageTable, rows: np.ndarray, encoders: dict | None = None) -> dict:
    """The images ``rows`` at ``reconstruct.image_size`` (uint8 (N, 3, s, s)) and, with ``encoders``, their
    backbone and projector embeddings by each model: one pass over the pixels."""
    c = run.config
    side, model_side = c.reconstruct.image_size, input_side(c)
    source = image_source(table, rows, c.data.image_size, c.data.workers)
    device = distributed.device()
    pixels, embedded = [], {(m, layer): [] for m in (encoders or {}) for layer in ("backbone", "projector")}
    for encoder in (encoders or {}).values():
        encoder.to(device)
    with torch.no_grad():
        for images in source.batches(batch_chunks(len(rows), c.attack.batch_size)):
            pixels.append((resized01(images, side) * 255).round().to(torch.uint8))
            if encoders:
                x = eval_images(images, model_side).to(device)
                for model, encoder in encoders.items():
                    features = encoder.backbone(x)  # once for both layers: the projector reads the same features
                    for layer in ("backbone", "projector"):
                        embedded[model, layer].append(encoder.head(features, own_layer(encoder, layer)).float().cpu())
    out = {"pixels": torch.cat(pixels) if pixels else torch.zeros((0, 3, side, side), dtype=torch.uint8)}
    for key, parts in embedded.items():
        out[key] = torch.cat(parts).numpy()
    return out


def own_layer(encoder, layer: str) -> str:
    """``layer``, or the backbone for an encoder without a projector (an audited network given without one)."""
    return layer if layer in encoder.layers else "backbone"


def chosen_crops(run: Run, table: ImageTable, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Ids, squares and each model's neighbour ids (N, k) of the crops of set ``name`` to reconstruct: the
    ``reconstruct.per_direction`` most confident by the sum of both models' vote confidences, a ranking that
    favours neither model (T's, which the metrics split into halves playing A and B, as many in all); all kept
    crops with 0."""
    c = run.config
    ids, squares = kept_crops(run, name, table)
    score, neighbours = np.zeros(len(ids)), {}
    for model in MODELS:
        found = load_neighbours(run, model, name, ids=ids, k=c.attack.k, n_classes=len(table.class_names))
        rows = index_of_ids(found["ids"], ids, f"neighbours of {name}")
        neighbours[model] = found["neighbour_ids"][rows]
        score += confidence(vote(found["neighbour_labels"][rows], len(table.class_names)))
    count = c.reconstruct.per_direction
    keep = np.arange(len(ids)) if not count or count >= len(ids) else np.sort(np.argsort(-score, kind="stable")[:count])
    return ids[keep], squares[keep], {model: found[keep] for model, found in neighbours.items()}


def crop_conditions(run: Run, table: ImageTable, name: str, ids: np.ndarray, squares: np.ndarray,
                    neighbours: dict[str, np.ndarray], encoders: dict, public: dict, public_ids: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """Each model's attack conditions of the crops ``ids`` (its neighbour ids ``neighbours[model]``, a row per
    crop): its public neighbours' mean backbone embedding and the crop's projector embedding."""
    c = run.config
    if not len(ids):  # no kept crop in this set: nothing to embed (a (0, -1) reshape is undefined)
        width = {m: public[m, "backbone"].shape[1] + public[m, "projector"].shape[1] for m in encoders}
        return {m: np.zeros((0, w), np.float32) for m, w in width.items()}
    rows = index_of_ids(table.ids, ids, f"crops of {name}")
    out = {}
    for model, encoder in encoders.items():
        batches = crop_batches(table, rows, squares, input_side(c), c.attack.batch_size, c.data.workers)
        projected = embed_batches({model: encoder}, batches, own_layer(encoder, "projector"), distributed.device())[model]
        out[model] = attack_conditions(neighbours[model], public_ids, public[model, "backbone"],
                                       projected.reshape(len(ids), -1), c.reconstruct.neighbours)
    return out


def display_crops(table: ImageTable, ids: np.ndarray, squares: np.ndarray, side: int) -> torch.Tensor:
    """The crops as float (N, 3, side, side) in [0, 1], for the grids."""
    rows = index_of_ids(table.ids, ids, "reconstructed crops")
    batches = list(crop_batches(table, rows, squares, side, 256, 0))
    if not batches:
        return torch.zeros((0, 3, side, side))
    return (torch.cat(batches) * STD + MEAN).clamp(0, 1)


def train_decoders(run: Run, public: dict, seeds: dict[str, int], folder: Path) -> tuple[dict, dict]:
    """One decoder per model on X's images and that model's embeddings of them; weights as safetensors."""
    settings = decoder_settings(run.config)
    images = public["pixels"].float() / 127.5 - 1
    decoders, summary = {}, {}
    for model in MODELS:
        conditions = torch.from_numpy(training_conditions(public[model, "backbone"], public[model, "projector"]))
        fitted = fit_decoder(images, conditions, settings, seeds[model], state_path=folder / f"decoder_{model}.resume.pt",
                             description=f"decoder {model} ({ROLES[model]})")
        save_weights(folder / f"decoder_{model}.safetensors", fitted.decoder,
                     {"model": model, "condition_width": int(conditions.shape[1]), "seed": seeds[model],
                      "settings": settings.as_dict()})
        decoders[model] = fitted.decoder
        losses = np.asarray(fitted.losses)
        summary[model] = {"first_loss": float(losses[:50].mean()), "final_loss": float(losses[-50:].mean()),
                          "condition_width": int(conditions.shape[1]), "seed": seeds[model]}
    return decoders, summary


def balanced_rows(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` positions of ``labels`` drawn at random, as evenly over the classes as they allow (sorted).

    Example:
        >>> np.bincount(np.array([0] * 90 + [1] * 10)[balanced_rows(np.array([0] * 90 + [1] * 10), 10, 0)]).tolist()
        [5, 5]
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    rank = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = order[labels[order] == label]
        rank[members] = np.arange(len(members))
    return np.sort(order[np.argsort(rank[order], kind="stable")][:count])


def fidelity(run: Run, decoders: dict, public: dict, labels: np.ndarray, judge, seeds: dict[str, int]) -> dict:
    """How often a decoder draws an X image's class from that image's own embeddings (the judge's label of
    one sample each, for :data:`FIDELITY_IMAGES` images of X drawn evenly over the classes): near chance, it
    ignores its condition."""
    r = run.config.reconstruct
    rows = balanced_rows(labels, min(FIDELITY_IMAGES, len(labels)), seeds["fidelity"])
    out = {"n": int(len(rows))}
    for model, decoder in decoders.items():
        conditions = torch.from_numpy(training_conditions(public[model, "backbone"][rows],
                                                          public[model, "projector"][rows]))
        drawn = sample(decoder, conditions, decoder_settings(run.config), r.steps, 1,
                       [seeds["sampling"] + int(i) for i in rows], r.batch_size)
        out[model] = float(np.mean(judge_labels(judge, drawn[:, 0], r.image_size) == labels[rows]))
    return out


def reconstruct_set(run: Run, table: ImageTable, name: str, ids: np.ndarray, squares: np.ndarray, conditions: dict,
                    decoders: dict, judge, hues: np.ndarray | None, seeds: dict[str, int], folder: Path) -> list[tuple]:
    """Draw the crops ``ids`` of set ``name`` with both decoders from the same noise, label the samples (judge,
    colour), save them (``samples_<name>.npz``, ``grid_<name>.png``); the rows of ``reconstructions.csv``."""
    r = run.config.reconstruct
    noise = [crop_seed(seeds["sampling"], crop) for crop in ids]
    labels = table.labels[index_of_ids(table.ids, ids, f"crops of {name}")]
    drawn, rows = {}, []
    for model in MODELS:
        floats = sample(decoders[model], torch.from_numpy(conditions[model]), decoder_settings(run.config),
                        r.steps, r.samples, noise, r.batch_size)
        flat = floats.reshape(-1, 3, r.image_size, r.image_size)
        judged = judge_labels(judge, flat, r.image_size).reshape(len(ids), r.samples)
        judge_share = sample_shares(judged, labels) if len(ids) else np.zeros(0)
        coloured, colour_share = None, None
        if hues is not None:
            coloured = colour_labels(flat, hues).reshape(len(ids), r.samples)
            colour_share = sample_shares(coloured, labels) if len(ids) else np.zeros(0)
        drawn[model] = _uint8(floats)  # judged: kept as bytes, a quarter of the floats (all crops at 128 px add up)
        del floats, flat
        for i, crop in enumerate(ids):
            rows.append((crop, name, int(labels[i]), model, noise[i], " ".join(map(str, judged[i])),
                         round(float(judge_share[i]), 6),
                         " ".join(map(str, coloured[i])) if coloured is not None else "",
                         round(float(colour_share[i]), 6) if colour_share is not None else ""))
    crops01 = display_crops(table, ids, squares, r.image_size)
    save_npz(folder / f"samples_{name}.npz", ids=ids, labels=labels, crops=_uint8(crops01),
             **{f"samples_{m}": drawn[m] for m in MODELS})
    shown = slice(0, GRID_ROWS)  # a PNG of thousands of rows helps no eye; every sample is in the npz
    write_grid(folder / f"grid_{name}.png", crops01[shown],
               [torch.from_numpy(drawn[m][shown]).movedim(-1, -3).float() / 255 for m in MODELS])
    return rows


def stage_reconstruct(run: Run) -> Path:
    """Train the judge and both decoders on X, draw ``reconstruct.samples`` reconstructions of the chosen crops of
    A, B and T from each, label them, and write grids, ``reconstructions.csv`` and ``reconstruction.json``."""
    c = run.config
    r = c.reconstruct
    if distributed.world_size() > 1:
        print(f"[reconstruct] warning: the decoders train in this process alone ({2 * r.iterations:,} iterations) "
              f"while the other {distributed.world_size() - 1} wait, at most {distributed.WAIT_HOURS} h before their "
              "wait times out; if that may not be enough, run the stage in one process afterwards: "
              "dejavu reconstruct --out RUN (python -m dejavu, not torchrun)")
    table = load_table(run)
    sets = load_split(run, table)
    folder = run.root / "reconstruction"
    folder.mkdir(parents=True, exist_ok=True)
    seeds = child_seeds(run.seeds["reconstruct"])
    encoders = load_encoders(run)
    public_rows = index_of_ids(table.ids, sets["X"], "split set X")
    public = full_images(run, table, public_rows, encoders)
    public_labels = table.labels[public_rows]
    judge = fit_judge(public["pixels"].float() / 255, public_labels, len(table.class_names), r.judge_epochs,
                      seeds["judge"], state_path=folder / "judge.resume.pt")
    held_rows = index_of_ids(table.ids, sets["T"], "split set T")
    quality = judge_quality(judge, full_images(run, table, held_rows)["pixels"].float() / 255,
                            table.labels[held_rows], r.image_size)
    save_weights(folder / "judge.safetensors", judge, {"temperature": judge.temperature,
                                                        "n_classes": len(table.class_names)})
    # What the judge and the decoders learnt from, so that anyone can check it holds no image of A, B or T.
    save_npz(folder / "training_ids.npz", ids=table.ids[public_rows], labels=public_labels)
    decoders, decoder_summary = train_decoders(run, public, seeds, folder)
    hues = class_hues(ScenesDataset(n_classes=len(table.class_names)).class_colour) \
        if c.data.dataset == "scenes" else None
    rows, counts = [], {}
    for name in SETS:
        ids, squares, neighbours = chosen_crops(run, table, name)
        counts[name] = int(len(ids))
        conditions = crop_conditions(run, table, name, ids, squares, neighbours, encoders, public, table.ids[public_rows])
        rows += reconstruct_set(run, table, name, ids, squares, conditions, decoders, judge, hues, seeds, folder)
    write_csv(folder / "reconstructions.csv", RECONSTRUCTION_COLUMNS, rows)
    summary = {
        "trained_on": {"X": int(len(public_rows))}, "judge": {"T": quality, "epochs": r.judge_epochs,
                                                              "temperature": judge.temperature},
        "decoders": decoder_summary, "fidelity": fidelity(run, decoders, public, public_labels, judge, seeds),
        "reconstructed": counts, "samples": r.samples, "steps": r.steps, "seeds": seeds,
        "colour_score": hues is not None,
    }
    write_json(folder / "reconstruction.json", summary)
    for state in folder.glob("*.resume.pt"):
        state.unlink()  # finished: weights, samples and labels are the stage's output
    print(f"[reconstruct] judge on T: {quality['accuracy']:.1%}; decoders follow their condition on X: "
          + ", ".join(f"{m} {summary['fidelity'][m]:.0%}" for m in MODELS))
    return folder / "reconstructions.csv"


def _uint8(images01: torch.Tensor) -> np.ndarray:
    """float (..., 3, s, s) in [0, 1] -> uint8 (..., s, s, 3)."""
    return (images01.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).numpy()


RECONSTRUCT = Stage(
    "reconstruct", stage_reconstruct, reads=("data", "split", "crops", "train_A", "train_B", "neighbours"),
    keys=("reconstruct", "attack.k", "data.dataset", *ENCODER_KEYS), seeds=("reconstruct",),
    also_reads=SPEED_KEYS,
    outputs=("reconstruction",), applies=lambda config: config.reconstruct.enabled,
    unneeded="reconstruct.enabled=false",
    description="diffusion decoders of both models (trained on X) draw the crops' objects; a judge labels them",
)
