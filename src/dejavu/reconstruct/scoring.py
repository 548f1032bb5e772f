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
