"""The reconstruct stage's artifacts read back: ``reconstruction/reconstructions.csv``, its summary and samples."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from dejavu.artifacts.files import MODELS, read_artifact_json, read_npz, redo, refuse
from dejavu.runs import Run

RECONSTRUCTION_COLUMNS = ("id", "set", "label", "model", "seed", "judge_labels", "judge_share", "colour_labels",
                          "colour_share")
RECONSTRUCTED_SETS = ("A", "B", "T")


def reconstruction_dir(run: Run) -> Path:
    return run.root / "reconstruction"


def _share(path: Path, line: int, name: str, text: str, advice: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise refuse(path, f"line {line}: {name} = {text!r}", "a share between 0 and 1", advice) from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise refuse(path, f"line {line}: {name} = {text!r}", "a share between 0 and 1", advice)
    return value


def load_reconstructions(run: Run) -> dict[tuple[str, str], dict[str, float | None]]:
    """``{(id, model): {"set", "label", "judge_share", "colour_share"}}`` from ``reconstructions.csv``, checked:
    exactly :data:`RECONSTRUCTION_COLUMNS`, sets A/B/T, models A/B, shares in [0, 1], every crop drawn by both
    models once. ``colour_share`` is None where the data have no colour score (files, not scenes)."""
    path, advice = reconstruction_dir(run) / "reconstructions.csv", redo(run.root, "reconstruct")
    if not path.is_file():
        raise refuse(path, "is missing", "the table the reconstruct stage writes", advice)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != RECONSTRUCTION_COLUMNS:
            raise refuse(path, f"has the columns {list(header)}", f"the columns {list(RECONSTRUCTION_COLUMNS)}", advice)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise refuse(path, f"line {line} has {len(row)} fields", f"{len(header)} fields", advice)
            item = dict(zip(header, row))
            if item["set"] not in RECONSTRUCTED_SETS or item["model"] not in MODELS:
                raise refuse(path, f"line {line}: set {item['set']!r}, model {item['model']!r}",
                             f"a set of {RECONSTRUCTED_SETS} and a model of {MODELS}", advice)
            key = (item["id"], item["model"])
            if key in out:
                raise refuse(path, f"line {line} repeats crop {key[0]!r} of model {key[1]}", "one row per crop and model",
                             advice)
            colour = item["colour_share"]
            if not item["label"].isdecimal():  # what int() reads (isdigit also takes "²")
                raise refuse(path, f"line {line}: label = {item['label']!r}", "a class id (a whole number ≥ 0)", advice)
            out[key] = {"set": item["set"], "label": int(item["label"]),
                        "judge_share": _share(path, line, "judge_share", item["judge_share"], advice),
                        "colour_share": _share(path, line, "colour_share", colour, advice) if colour else None}
    crops = {crop for crop, _ in out}
    lone = [crop for crop in crops if any((crop, model) not in out for model in MODELS)]
    if lone:
        raise refuse(path, f"holds crop {sorted(lone)[0]!r} drawn by one model only", "each crop drawn by both models",
                     advice)
    return out


def load_reconstruction_summary(run: Run) -> dict[str, Any]:
    """``reconstruction/reconstruction.json``: the judge's quality, the decoders' losses and fidelity, counts."""
    return read_artifact_json(reconstruction_dir(run) / "reconstruction.json", redo(run.root, "reconstruct"))


def load_reconstruction_samples(run: Run, name: str) -> dict[str, np.ndarray]:
    """``reconstruction/samples_<name>.npz``: ids, labels, crops (N, s, s, 3) and each model's samples
    (N, S, s, s, 3), uint8."""
    path = reconstruction_dir(run) / f"samples_{name}.npz"
    required = ("ids", "labels", "crops", *(f"samples_{m}" for m in MODELS))
    arrays = read_npz(path, required, redo(run.root, "reconstruct"))
    n = len(arrays["ids"])
    if any(len(arrays[key]) != n for key in required):
        raise refuse(path, "holds arrays of different lengths", f"{n} rows in every array", redo(run.root, "reconstruct"))
    return arrays
