"""A number for what the eye sees in the reconstructions (issue 15, beyond the paper, which judges by eye).

Each reconstruction is labelled by a classifier that never saw A, B or T; a crop's reconstruction is
"right" by the share of its samples labelled with the crop's true class. The target's decoder against the
reference's, per crop, is then the label test again: pooled over directions as the attack's numbers are
(the mean of the directions' accuracies), McNemar on the paired per-crop shares, a bootstrap interval, and
the same among each model's 20 % most confident crops (ranked by the attack's own vote confidence).
"""

from __future__ import annotations

import numpy as np

from dejavu.errors import DataError
from dejavu.metrics.population import accuracy_at
from dejavu.metrics.stats import bootstrap_gap_ci, mcnemar_exact

COLUMNS = ("target_ok", "reference_ok", "target_confidence", "reference_confidence")


def sample_shares(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float (N,): the share of each crop's samples (``predicted`` (N, S) class ids) labelled ``labels`` (N,).

    Example:
        >>> sample_shares(np.array([[1, 1, 0, 2], [3, 3, 3, 3]]), np.array([1, 0])).tolist()
        [0.5, 0.0]
    """
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.ndim != 2 or len(predicted) != len(labels) or not predicted.shape[1]:
        raise DataError(f"reconstruction labels: expected (crops, samples) predictions for {len(labels)} crops, "
                        f"found shape {predicted.shape}")
    return (predicted == labels[:, None]).mean(axis=1)


def reconstruction_summary(directions: dict[str, dict[str, np.ndarray]], n_resamples: int, level: float,
                           seed: int) -> dict[str, float | int | list[float]]:
    """``n``, ``target_acc``, ``reference_acc``, ``gap``, ``mcnemar_p``, ``gap_ci95``, and the same among the
    20 % most confident (``*_top20``, ``gap_top20``), pooled over ``directions`` ({name: columns of
    :data:`COLUMNS`, one row per crop}). NaN where no crop was reconstructed."""
    parts = {name: {key: np.asarray(rows[key], np.float64) for key in COLUMNS} for name, rows in directions.items()}
    parts = {name: rows for name, rows in parts.items() if len(rows["target_ok"])}
    nan = float("nan")
    if not parts:
        return {"n": 0, "target_acc": nan, "reference_acc": nan, "gap": nan, "mcnemar_p": nan,
                "gap_ci95": [nan, nan], "target_acc_top20": nan, "reference_acc_top20": nan, "gap_top20": nan}
    mean = lambda values: float(np.mean(values))  # noqa: E731 (the pooling: one value per direction)
    target = mean([rows["target_ok"].mean() for rows in parts.values()])
    reference = mean([rows["reference_ok"].mean() for rows in parts.values()])
    target_top = mean([accuracy_at(r["target_ok"], r["target_confidence"], 0.20) for r in parts.values()])
    reference_top = mean([accuracy_at(r["reference_ok"], r["reference_confidence"], 0.20) for r in parts.values()])
    test = mcnemar_exact(np.concatenate([r["target_ok"] for r in parts.values()]),
                         np.concatenate([r["reference_ok"] for r in parts.values()]))
    low, high = bootstrap_gap_ci([(r["target_ok"], r["reference_ok"]) for r in parts.values()],
                                 n_resamples=n_resamples, level=level, seed=seed)
    return {"n": int(sum(len(r["target_ok"]) for r in parts.values())), "target_acc": target,
            "reference_acc": reference, "gap": target - reference, "mcnemar_p": float(test.p_value),
            "gap_ci95": [float(low), float(high)], "target_acc_top20": target_top,
            "reference_acc_top20": reference_top, "gap_top20": target_top - reference_top}


def paired_directions(columns: dict[str, np.ndarray], shares: dict[tuple[str, str], float | None]
                      ) -> dict[str, dict[str, np.ndarray]]:
    """The rows of an attack table (``samples.csv``'s columns: id, direction, target_model, reference_model and
    their confidences) whose crop was reconstructed, by direction: the target's and the reference's share
    (``shares[(id, model)]``) and the attack's confidences. Rows whose share is None (no score) are left out."""
    out: dict[str, dict[str, list[float]]] = {}
    for i, crop in enumerate(np.asarray(columns["id"]).tolist()):
        target = shares.get((crop, str(columns["target_model"][i])))
        reference = shares.get((crop, str(columns["reference_model"][i])))
        if target is None or reference is None:
            continue
        rows = out.setdefault(str(columns["direction"][i]), {key: [] for key in COLUMNS})
        for key, value in zip(COLUMNS, (target, reference, columns["target_confidence"][i],
                                        columns["reference_confidence"][i])):
            rows[key].append(float(value))
    return {name: {key: np.asarray(values) for key, values in rows.items()} for name, rows in out.items()}


def reconstruction_metrics(tables: dict[str, dict[str, np.ndarray]], scores: dict[str, dict], n_resamples: int,
                           level: float, seed: int) -> dict:
    """``metrics.json["reconstruction"]``: for each score (``{"judge": shares, "colour": shares}``, shares keyed
    by (id, model)), :func:`reconstruction_summary` of A's and B's crops and of the control's (T) under
    ``control``; the judge's at the top level, the others under their name."""
    def both(shares: dict) -> dict:
        summary = reconstruction_summary(paired_directions(tables["attack"], shares), n_resamples, level, seed)
        summary["control"] = reconstruction_summary(paired_directions(tables["control"], shares), n_resamples, level,
                                                    seed + 1)
        return summary

    out = both(scores["judge"])
    for name, shares in scores.items():
        if name != "judge" and any(value is not None for value in shares.values()):
            out[name] = both(shares)
    return out
