"""Neighbour votes -> top-1 / top-5 predictions and confidence (minus the vote's entropy)."""

from __future__ import annotations

import numpy as np


def vote(neighbour_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Label histogram of each row of int (Q, k) neighbour labels -> int (Q, n_classes) counts.

    One ``np.bincount`` over labels offset by row, no loop per row.

    Example:
        >>> vote(np.array([[0, 1, 1], [2, 2, 2]]), 3).tolist()
        [[1, 2, 0], [0, 0, 3]]
    """
    q, _ = neighbour_labels.shape
    offsets = np.arange(q, dtype=np.int64)[:, None] * n_classes
    flat = (neighbour_labels.astype(np.int64) + offsets).ravel()
    return np.bincount(flat, minlength=q * n_classes).reshape(q, n_classes)


def top_predictions(counts: np.ndarray, top: int = 5) -> np.ndarray:
    """int (Q, top) labels by decreasing vote; ties go to the smaller label (deterministic)."""
    top = min(top, counts.shape[1])
    return np.argsort(-counts, axis=1, kind="stable")[:, :top]


def confidence(counts: np.ndarray) -> np.ndarray:
    """Minus the entropy (nats) of each vote: 0 for a unanimous vote, lower when split.

    Example:
        >>> confidence(np.array([[4, 0], [2, 2]])).round(4).tolist()
        [0.0, -0.6931]
    """
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return terms.sum(axis=1)
