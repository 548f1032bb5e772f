"""What the models produced, read back and checked: embeddings, neighbours, training histories, the
sanity outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dejavu.artifacts.files import (
    check_arrays, check_unique, count, describe, examples, read_artifact_json, read_npz, redo, refuse,
)
from dejavu.runs import Run


# Embeddings and neighbours ----------------------------------------------------------------------
def load_embeddings(run: Run, model: str, name: str, ids: np.ndarray | None = None,
                    width: int | None = None) -> dict[str, np.ndarray]:
    """``embeddings/model_<model>/<name>.npz`` (``public_X`` or ``crops_<set>``), checked: unique string ids
    (N,), 2-D float embeddings (N, D) and, for X, integer labels (N,) >= 0. ``ids``: the ids it must hold
    (any order); ``width``: the D it must have (that of the other file a search compares it with)."""
    path, advice = run.embeddings_dir / f"model_{model}" / f"{name}.npz", redo(run.root, "embed")
    keys = ("ids", "labels", "embeddings") if name == "public_X" else ("ids", "embeddings")
    arrays = read_npz(path, keys, advice)
    spec = {"ids": (("N",), "U"), "embeddings": (("N", "D"), "f")}
    if "labels" in arrays:
        spec["labels"] = (("N",), "iu")
    # No crop kept gives (0, 0) embeddings: only rows have a width to compare.
    found = check_arrays(path, arrays, spec, advice, {"D": width} if width is not None and len(arrays["ids"]) else None)
    if found["N"] and not found["D"]:
        raise refuse(path, f"holds embeddings of width 0 for {found['N']} ids", "at least one dimension", advice)
    if "labels" in arrays and (arrays["labels"] < 0).any():
        raise refuse(path, "holds negative labels", "class indices >= 0", advice)
    _same_ids(path, arrays["ids"], ids, advice)
    return arrays


def load_neighbours(run: Run, model: str, name: str, ids: np.ndarray | None = None, k: int | None = None,
                    n_classes: int | None = None, known_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``neighbours/model_<model>/crops_<name>.npz``, checked: unique string query ids (N,), and (N, k)
    neighbour ids (strings), labels (integers, below ``n_classes`` when given) and distances (floats).
    ``ids``: the query ids it must hold (any order); ``k``: the neighbours per query it must have;
    ``known_ids``: the catalog's ids, which every neighbour must be one of."""
    path, advice = run.neighbours_dir / f"model_{model}" / f"crops_{name}.npz", redo(run.root, "neighbours")
    arrays = read_npz(path, ("ids", "neighbour_ids", "neighbour_labels", "distances"), advice)
    spec = {"ids": (("N",), "U"), "neighbour_ids": (("N", "k"), "U"), "neighbour_labels": (("N", "k"), "iu"),
            "distances": (("N", "k"), "f")}
    found = check_arrays(path, arrays, spec, advice, {"k": k} if k is not None else None)
    if found["N"] and not found["k"]:
        raise refuse(path, "holds no neighbour per query", "k >= 1 neighbours per query", advice)
    labels = arrays["neighbour_labels"]
    if labels.size and (labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes)):
        raise refuse(path, f"holds neighbour labels from {labels.min()} to {labels.max()}",
                     f"class indices 0 to {n_classes - 1 if n_classes is not None else 'C - 1'}", advice)
    if known_ids is not None:
        strangers = np.setdiff1d(arrays["neighbour_ids"], known_ids)
        if len(strangers):
            raise refuse(path, f"names {count(len(strangers), 'neighbours')} unknown to the catalog (e.g. "
                               f"{examples(strangers)})", "neighbours among the catalog's images", advice)
    _same_ids(path, arrays["ids"], ids, advice)
    return arrays


def _same_ids(path: Path, held: np.ndarray, wanted: np.ndarray | None, advice: str) -> None:
    check_unique(path, held, "ids", advice)
    if wanted is None:
        return
    extra, missing = np.setdiff1d(held, wanted), np.setdiff1d(wanted, held)
    if len(extra) or len(missing):
        found = f"holds {count(len(extra), 'ids')} it should not (e.g. {examples(extra)})" if len(extra) else \
            f"lacks {count(len(missing), 'ids')} (e.g. {examples(missing)})"
        raise refuse(path, found, f"the {len(wanted)} ids its stage computed them for", advice)


# Training history and sanity -------------------------------------------------------------------------
def load_history(run: Run, model: str) -> dict[str, Any]:
    """``models/<model>/history.json``: an object whose ``loss`` is a list of numbers (one per epoch; NaN
    or infinite where the training diverged) and whose other known fields are numbers or strings."""
    path, advice = run.model_dir(model) / "history.json", redo(run.root, f"train --model {model}")
    history = read_artifact_json(path, advice)
    loss = history.get("loss") if isinstance(history, dict) else None
    if not isinstance(loss, list) or not all(_is_number(value) for value in loss):
        raise refuse(path, f"holds {describe(history)} whose 'loss' is {describe(loss)}"
                           f"{'' if not isinstance(loss, list) else ' holding a non-number'}",
                     "an object whose 'loss' is a list of numbers", advice)
    odd = [key for key in ("epochs", "images", "processes", "images_per_second_this_session")
           if key in history and not _is_number(history[key])]
    if odd:
        raise refuse(path, f"gives '{odd[0]}' as {describe(history[odd[0]])}", "a number", advice)
    return history


def load_source(run: Run, model: str) -> dict[str, Any]:
    """``models/<model>/source.json`` of an audit: an object naming the checkpoint loaded (``path``, ``sha256``,
    ``format``, ``arch``) and the embedding ``widths`` per layer."""
    path, advice = run.model_dir(model) / "source.json", redo(run.root, f"train --model {model}")
    source = read_artifact_json(path, advice)
    fields = {"path": str, "sha256": str, "format": str, "arch": str, "widths": dict}
    wrong = [key for key, kind in fields.items() if not isinstance(source, dict) or not isinstance(source.get(key), kind)]
    if wrong:
        raise refuse(path, f"holds {describe(source)} without a valid '{wrong[0]}'",
                     "the object an audit's train stage writes", advice)
    return source


def load_sanity(run: Run) -> dict[str, Any]:
    """``sanity.json``: ``passed`` (a boolean), ``failures`` (sentences) and ``checks`` (objects with
    ``name``, ``subject``, ``passed`` and ``detail``)."""
    path, advice = run.root / "sanity.json", redo(run.root, "sanity")
    sanity = read_artifact_json(path, advice)
    if not isinstance(sanity, dict) or not isinstance(sanity.get("passed"), bool):
        raise refuse(path, f"holds {describe(sanity)} without a boolean 'passed'",
                     "the object the sanity stage writes", advice)
    failures, checks = sanity.get("failures"), sanity.get("checks", [])
    if not isinstance(failures, list) or not all(isinstance(failure, str) for failure in failures):
        raise refuse(path, f"gives 'failures' as {describe(failures)}", "a list of sentences", advice)
    if sanity["passed"] != (not failures):
        raise refuse(path, f"gives 'passed' = {str(sanity['passed']).lower()} with "
                           f"{count(len(failures), 'failures')}", "'passed' true exactly when no check failed", advice)
    fields = {"name": str, "subject": str, "passed": bool, "detail": str}
    if not isinstance(checks, list) or not all(isinstance(check, dict) and all(
            isinstance(check.get(key), kind) for key, kind in fields.items()) for check in checks):
        raise refuse(path, "holds a check without its name, subject, passed and detail",
                     "'checks' as a list of objects with those four fields", advice)
    return sanity


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The one-model test's correlation classifier ---------------------------------------------------------
def load_probabilities(run: Run, name: str, ids: np.ndarray | None = None,
                       n_classes: int | None = None) -> dict[str, np.ndarray]:
    """``models/classifier/probabilities_<name>.npz`` (crops of A or T), checked: unique string ids (N,) and
    (N, C) class probabilities, finite, in [0, 1], rows summing to 1 (C = ``n_classes`` when given)."""
    path, advice = run.model_dir("classifier") / f"probabilities_{name}.npz", redo(run.root, "correlation")
    arrays = read_npz(path, ("ids", "probabilities"), advice)
    found = check_arrays(path, arrays, {"ids": (("N",), "U"), "probabilities": (("N", "C"), "f")}, advice,
                         {"C": n_classes} if n_classes is not None else None)
    p = arrays["probabilities"].astype(np.float64)
    if found["N"] and (not np.isfinite(p).all() or p.min() < 0 or p.max() > 1
                       or np.abs(p.sum(1) - 1).max() > 1e-6):
        raise refuse(path, "holds probabilities that are not finite, outside [0, 1] or do not sum to 1 per row",
                     "the classifier's class probabilities of each crop", advice)
    _same_ids(path, arrays["ids"], ids, advice)
    return {"ids": arrays["ids"], "probabilities": p}


def load_classifier_summary(run: Run) -> dict[str, Any]:
    """``models/classifier/classifier.json``: the classifier's settings, training and calibration (objects
    ``validation`` and ``T``, each with ``n``, ``accuracy``, ``mean_confidence``, ``ece``, ``nll``, ``brier``)."""
    path, advice = run.model_dir("classifier") / "classifier.json", redo(run.root, "correlation")
    summary = read_artifact_json(path, advice)
    keys = ("n", "accuracy", "mean_confidence", "ece", "nll", "brier")
    calibration = summary.get("calibration") if isinstance(summary, dict) else None
    if not isinstance(calibration, dict) or not isinstance(calibration.get("T"), dict) or not all(
            _is_number(calibration["T"].get(key)) for key in keys):
        raise refuse(path, f"holds {describe(summary)} without a valid 'calibration.T'",
                     "the object the correlation stage writes", advice)
    return summary
