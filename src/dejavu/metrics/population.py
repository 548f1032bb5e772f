"""Accuracy among the p % most confident attacked examples (each model ranks by its own confidence)."""

from __future__ import annotations

import math

import numpy as np

# The curve's grid: p = 5 %, 10 %, ..., 100 %.
FRACTIONS = np.round(np.arange(1, 21) * 0.05, 2)


def n_most_confident(n: int, fraction: float) -> int:
    """How many examples "the ``fraction`` most confident" of ``n`` means: ceil, at least one."""
    return max(1, math.ceil(round(fraction * n, 9))) if n else 0


def confidence_order(confidence: np.ndarray) -> np.ndarray:
    """Positions from most to least confident; ties keep table order (tables are sorted by id)."""
    return np.argsort(-confidence, kind="stable")


def most_confident_mask(confidence: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``fraction`` most confident examples."""
    mask = np.zeros(len(confidence), dtype=bool)
    mask[confidence_order(confidence)[: n_most_confident(len(confidence), fraction)]] = True
    return mask


def accuracy_curve(correct: np.ndarray, confidence: np.ndarray, fractions: np.ndarray = FRACTIONS) -> np.ndarray:
    """Accuracy among the p most confident, for each p in ``fractions`` (one cumulative sum).

    Example:
        >>> accuracy_curve(np.array([1, 0, 1, 0]), np.array([0.0, -1.0, -0.5, -2.0]), np.array([0.5, 1.0])).tolist()
        [1.0, 0.5]
    """
    if len(correct) == 0:
        return np.full(len(fractions), np.nan)
    hits = np.cumsum(np.asarray(correct, dtype=np.float64)[confidence_order(confidence)])
    counts = np.array([n_most_confident(len(correct), f) for f in fractions])
    return hits[counts - 1] / counts


def accuracy_at(correct: np.ndarray, confidence: np.ndarray, fraction: float) -> float:
    return float(accuracy_curve(correct, confidence, np.array([fraction]))[0])
