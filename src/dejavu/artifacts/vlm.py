"""The vlm stage's artifacts read back: ``vlm/summary.json`` (checked against its schema), ``vlm/samples.csv``
and ``vlm/neighbours.npz``."""

from __future__ import annotations

import csv
from typing import Any

import numpy as np

from dejavu.artifacts.files import models_of, query_sets_of, read_artifact_json, read_npz, redo, refuse
from dejavu.metrics.schema import from_json, to_json
from dejavu.metrics.vlm import retrieval_failures
from dejavu.metrics.vlm_schema import Vlm
from dejavu.runs import Run

SAMPLE_COLUMNS = ("id", "set", "target_model", "reference_model", "caption", "objects", "target_objects", "reference_objects",
                  "target_precision", "reference_precision", "target_recall", "reference_recall",
                  "target_confidence", "reference_confidence")


def load_vlm_summary(run: Run) -> dict[str, Any]:
    """``vlm/summary.json``: every key of ``metrics.json["vlm"]``, of its type (a damaged file is named)."""
    path = run.root / "vlm" / "summary.json"
    payload = read_artifact_json(path, redo(run.root, "vlm"))
    if isinstance(payload, dict) and "failures" not in payload:
        # Written before the outcomes: a verdict sentence instead of the retrieval gate's failures.
        payload = {key: value for key, value in payload.items() if key != "verdict"}
        try:
            payload["failures"] = retrieval_failures(payload["retrieval"], int(payload["control"]["n"]),
                                                     int(payload["k"]), run.config.metrics.alpha, "check the models")
        except (KeyError, TypeError, ValueError):
            pass  # from_json names what is missing
    return to_json(from_json(Vlm, payload, str(path)))


def load_vlm_samples(run: Run) -> list[dict[str, str]]:
    """``vlm/samples.csv``'s rows, its header checked."""
    path, advice = run.root / "vlm" / "samples.csv", redo(run.root, "vlm")
    if not path.is_file():
        raise refuse(path, "is missing", "the vlm stage's table of records", advice)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != SAMPLE_COLUMNS:
            raise refuse(path, f"has the columns {reader.fieldnames}", f"the columns {list(SAMPLE_COLUMNS)}", advice)
        return list(reader)


def load_vlm_neighbours(run: Run) -> dict[str, np.ndarray]:
    """``vlm/neighbours.npz``: X's ids and, per set S of A, B, T (A and T in a one-model audit), its ids and each model's neighbour rows of X
    (and the text-only reference's, ``neighbours_S_text``, when it is the reference)."""
    sets, models = query_sets_of(run.config), models_of(run.config)
    names = [f"{kind}_{s}{suffix}" for s in sets for kind, suffix in (("ids", ""), *(("neighbours", f"_{m}") for m in models))]
    text = [f"neighbours_{s}_text" for s in sets]
    path = run.root / "vlm" / "neighbours.npz"
    arrays = read_npz(path, ["public_ids", *names], redo(run.root, "vlm"), optional=text)
    names += [name for name in text if name in arrays]
    n_public = len(arrays["public_ids"])
    for name in names:
        if name.startswith("neighbours") and arrays[name].size and not (0 <= arrays[name].min() <= arrays[name].max() < n_public):
            raise refuse(path, f"holds '{name}' with rows outside X's {n_public} images", "rows of X", redo(run.root, "vlm"))
    return arrays
