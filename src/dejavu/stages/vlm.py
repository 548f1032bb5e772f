"""The vision-language stage (train.method = clip): each training caption retrieves its nearest public images,
whose objects are the prediction of what the training image holds; target against reference per record.

Directions as in the image test: A's captions with A's model as the target and B's as the reference, and B's
the other way; the control is T's captions (seen by neither), half of them each way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dejavu.artifacts import MODELS, VLM_COLUMNS, load_split, load_table, query_sets_of, write_csv
from dejavu.attack.embed import embed_batches
from dejavu.attack.neighbours import knn
from dejavu.data.augment import eval_images
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.data.sources import image_source
from dejavu.errors import DataError, RunFolderError
from dejavu.attack.text_reference import TfidfCaptions
from dejavu.metrics.vlm import (
    excess_over_control, gap_summary, precision_recall, predicted_objects, retrieval_failures, retrieval_recall,
    sign_scores,
)
from dejavu.models.outside import input_side
from dejavu.models.text import TextEncoder, build_text_encoder
from dejavu.runs import Run, save_npz, write_json
from dejavu.stages.attack import (
    ENCODER_KEYS, SPEED_KEYS, batch_chunks, load_encoder, load_outside_models, stored_embeddings,
)
from dejavu.stages.declaration import Stage, fingerprint
from dejavu.stages.train import TRAIN
from dejavu import distributed
from dejavu.train.checkpoints import load_weights
from dejavu.train.loop import recipe_fingerprint


def load_text_encoder(run: Run, model: str, out_dim: int) -> TextEncoder:
    """The text encoder trained beside ``model``'s image encoder, checked to come from this run's recipe and data."""
    c = run.config
    text = build_text_encoder(c.train.clip, out_dim)
    expected = recipe_fingerprint(c.train, c.data.input_size, run.seeds["train"], fingerprint(TRAIN[model], run))
    load_weights(run.model_dir(model) / "text.safetensors", text, {"recipe": expected["recipe"], "data": expected["data"]})
    return text.eval()


@torch.no_grad()
def embed_captions(text: torch.nn.Module, tokens: np.ndarray, batch: int, device: torch.device | None = None) -> np.ndarray:
    """float32 (N, D) L2-normal text embeddings of int64 (N, L) tokens (on ``device`` when given: a GPU) by a
    text encoder (dejavu's :class:`TextEncoder` or an open_clip model's ``ClipText``)."""
    text = text.to(device or torch.device("cpu"))
    parts = [F.normalize(text(torch.from_numpy(tokens[rows]).to(device or "cpu")).float(), dim=1).cpu().numpy()
             for rows in batch_chunks(len(tokens), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, text.output_dim), np.float32)


def _models(run: Run) -> tuple[dict[str, torch.nn.Module], dict[str, torch.nn.Module]]:
    """Each model's image encoder and text encoder: those dejavu trained, or in an audit the open_clip models'
    (the target alone in a one-model audit)."""
    c = run.config
    if not c.model.audited:
        encoders = {model: load_encoder(run, model) for model in MODELS}
        return encoders, {model: load_text_encoder(run, model, encoders[model].out_features) for model in MODELS}
    loaded = load_outside_models(c, "projector")  # the joint space the captions are retrieved in
    return {m: item.encoder for m, item in loaded.items()}, {m: item.text for m, item in loaded.items()}


def _names(objects: np.ndarray, class_names: np.ndarray) -> str:
    return ";".join(str(class_names[c]) for c in np.flatnonzero(objects))


def _records(table: ImageTable, rows: np.ndarray, neighbours: dict[str, np.ndarray], public_objects: np.ndarray):
    """Per model (or the text reference): the records' predicted objects (N, C), precision, recall, confidence."""
    out = {}
    for model, idx in neighbours.items():
        union, confidence = predicted_objects(public_objects[idx])
        precision, recall = precision_recall(union, table.objects[rows])
        out[model] = {"objects": union, "precision": precision, "recall": recall, "confidence": confidence}
    return out


def _direction(per_model: dict, target: str, reference: str, keep: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`dejavu.metrics.vlm.gap_summary`'s input: ``target`` against ``reference`` on the records ``keep``."""
    return {**{f"target_{key}": per_model[target][key][keep] for key in ("precision", "recall", "confidence")},
            **{f"reference_{key}": per_model[reference][key][keep] for key in ("precision", "recall")}}


def _retrieval(text: dict[str, np.ndarray], images: dict[str, np.ndarray], k: int) -> dict[str, float]:
    """Caption -> own image among T's images: per model its recall@k, and chance (k / |T|)."""
    n = len(next(iter(text.values())))
    return {"chance": min(1.0, k / max(n, 1)), **{model: retrieval_recall(text[model], images[model], k) for model in text}}


def stage_vlm(run: Run) -> Path:
    """``vlm/neighbours.npz`` (each caption's k public neighbours per model), ``vlm/samples.csv`` (a row per
    record and direction) and ``vlm/summary.json`` (PPG, PRG, tests, the control; ``metrics.json["vlm"]``)."""
    c = run.config
    table = load_table(run)
    if table.captions is None:
        raise RunFolderError(f"'{run.data_dir / 'catalog.npz'}' holds no captions: the vision-language test needs "
                             "captioned data (captioned_scenes, coco with data.captions, a manifest with a caption "
                             "column); re-run `dejavu data`")
    sets = load_split(run, table)
    device = distributed.device()
    encoders, texts = _models(run)
    models = list(encoders)
    public_rows = index_of_ids(table.ids, sets["X"], "split set X")
    if len(public_rows) < c.vlm.k:
        raise DataError(f"config key 'vlm.k' = {c.vlm.k} is larger than the public set X ({len(public_rows)} images); "
                        "lower it")

    side = input_side(c)

    def images(rows: np.ndarray, what: str) -> dict[str, np.ndarray]:
        source = image_source(table, rows, c.data.image_size, c.data.workers)
        batches = (eval_images(b, side) for b in source.batches(batch_chunks(len(rows), c.attack.batch_size)))
        raw = embed_batches(encoders, batches, "projector", device)
        return {m: F.normalize(torch.from_numpy(stored_embeddings(raw[m], m, what, "float32")), dim=1).numpy() for m in raw}

    public = images(public_rows, "images of set X")
    public_objects = table.objects[public_rows]
    # The text-only reference's index: X's captions alone.
    text_index = TfidfCaptions(table.captions[public_rows]) if c.vlm.reference == "text" else None
    per_set, arrays = {}, {}
    for name in query_sets_of(c):
        rows = index_of_ids(table.ids, sets[name], f"split set {name}")
        text = {m: stored_embeddings(embed_captions(texts[m], texts[m].tokenize(table.captions[rows]), c.attack.batch_size,
                                                    device), m, f"captions of set {name}", "float32") for m in models}
        neighbours = {m: knn(text[m], public[m], c.vlm.k, c.attack.backend)[1] for m in models}
        if text_index is not None:
            neighbours["text"] = text_index.nearest(table.captions[rows], c.vlm.k)
        per_set[name] = (rows, _records(table, rows, neighbours, public_objects), text)
        arrays.update({f"ids_{name}": table.ids[rows], **{f"neighbours_{name}_{m}": idx for m, idx in neighbours.items()}})
    save_npz(run.root / "vlm" / "neighbours.npz", public_ids=table.ids[public_rows], **arrays)

    m = c.metrics
    other = {"A": "B", "B": "A"} if text_index is None else {"A": "text", "B": "text"}
    directions = {name: _direction(per_set[name][1], name, other[name], np.arange(len(per_set[name][0])))
                  for name in models}
    summary = gap_summary(directions, m.bootstrap, m.ci_level, run.seeds["bootstrap"])
    summary["directions"] = {name: gap_summary({name: d}, m.bootstrap, m.ci_level, run.seeds["bootstrap"])
                             for name, d in directions.items()}
    t_rows, t_records, t_text = per_set["T"]
    if len(models) == 2:
        first = np.random.default_rng(run.seeds["control_split"]).permutation(len(t_rows)) < len(t_rows) // 2
        control = {"T1": _direction(t_records, "A", other["A"], first), "T2": _direction(t_records, "B", other["B"], ~first)}
    else:  # a one-model audit: all of T is the target's control
        first = np.ones(len(t_rows), dtype=bool)
        control = {"T": _direction(t_records, "A", other["A"], first)}
    summary["control"] = gap_summary(control, m.bootstrap, m.ci_level, run.seeds["bootstrap"])
    summary["reference"] = c.vlm.reference
    if text_index is not None:  # another kind of reference differs on T too: test the gap beyond the control's
        summary["excess"] = {}
        for measure, name in (("precision", "ppg"), ("recall", "prg")):
            test = excess_over_control(sign_scores(directions, measure), sign_scores(control, measure), m.bootstrap,
                                       m.ci_level, run.seeds["bootstrap"])
            summary["excess"].update({name: test["gap"], f"{name}_p": test["p"], f"{name}_ci": test["ci"]})
    advice = ("check the checkpoint, model.arch and the input (model.image_size, model.mean, model.std)" if c.model.audited
              else "train longer (train.epochs) or check train.lr")
    summary["k"] = c.vlm.k
    summary["retrieval"] = _retrieval(t_text, images(t_rows, "images of set T"), c.vlm.k)
    # The gate the metrics stage's outcome needs: no verdict for a CLIP that did not learn image-caption pairs.
    summary["failures"] = retrieval_failures(summary["retrieval"], len(t_rows), c.vlm.k, m.alpha, advice)
    _write_samples(run, table, per_set, first, other)
    path = run.root / "vlm" / "summary.json"
    write_json(path, summary)
    print(f"[vlm] {summary_line(summary)}")
    return path


def summary_line(summary: dict) -> str:
    return (f"PPG {summary['ppg']:+.3f} (p {summary['ppg_p']:.2g}), PRG {summary['prg']:+.3f} (p {summary['prg_p']:.2g}); "
            f"control PPG {summary['control']['ppg']:+.3f} (p {summary['control']['ppg_p']:.2g})")


def _write_samples(run: Run, table: ImageTable, per_set: dict, first_half: np.ndarray, other: dict) -> None:
    rows_out = []
    for name, (rows, records, _) in per_set.items():
        for i, row in enumerate(rows):
            target = name if name != "T" else ("A" if first_half[i] else "B")
            reference = other[target]
            t, r = records[target], records[reference]
            rows_out.append([table.ids[row], name, target, reference, table.captions[row],
                             *(_names(objects, table.class_names) for objects in (table.objects[row], t["objects"][i],
                                                                                  r["objects"][i])),
                             *(f"{side[key][i]:.6g}" for key in ("precision", "recall") for side in (t, r)),
                             # Every digit: the most-confident cuts rank by it.
                             *(repr(float(side["confidence"][i])) for side in (t, r))])
    write_csv(run.root / "vlm" / "samples.csv", VLM_COLUMNS, rows_out)


VLM = Stage(
    "vlm", stage_vlm, reads=("data", "split", "train_A", "train_B"),
    keys=("vlm", "metrics", "attack.backend", *ENCODER_KEYS), seeds=("control_split", "bootstrap"),
    also_reads=SPEED_KEYS, outputs=("vlm",),
    applies=lambda config: config.train.method == "clip", unneeded="not a CLIP run (train.method != clip)",
    description="CLIP runs: training captions retrieve public images; object precision, recall, PPG, PRG, control T",
)
