"""Accuracy among the p % most confident attacked examples (each model ranks by its own confidence).

Votes of k neighbours take few distinct values, so many crops share a confidence. When the cut at
p % falls inside a block of tied crops, choosing some of them by id (or by class) would bias the
number; instead the tied block counts fractionally: each tied crop is taken with weight
(slots left) / (block size), the expected accuracy under a uniformly random tie-break.
"""

from __future__ import annotations

import math

import numpy as np

# The curve's grid: p = 5 %, 10 %, ..., 100 %.
FRACTIONS = np.round(np.arange(1, 21) * 0.05, 2)


def n_most_confident(n: int, fraction: float) -> int:
    """How many examples "the ``fraction`` most confident" of ``n`` means: ceil, at least one."""
    return max(1, math.ceil(round(fraction * n, 9))) if n else 0


def accuracy_curve(correct: np.ndarray, confidence: np.ndarray, fractions: np.ndarray = FRACTIONS) -> np.ndarray:
    """Accuracy among the p most confident, for each p in ``fractions``, ties at the cut fractional.

    ``correct`` (N,) is bool or in [0, 1] (a tied vote's expected correctness), ``confidence`` (N,);
    returns float (len(fractions),), NaN for no examples.

    Example:
        >>> accuracy_curve(np.array([1, 0, 1, 0]), np.array([0.0, -1.0, -0.5, -2.0]), np.array([0.5, 1.0])).tolist()
        [1.0, 0.5]
        >>> accuracy_curve(np.array([1, 0, 0, 0]), np.array([0.0, 0.0, 0.0, -1.0]), np.array([0.5])).tolist()
        [0.3333333333333333]
    """
    return mean_of_most_confident(correct, confidence, fractions)


def mean_of_most_confident(values: np.ndarray, confidence: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (N,) among the p most confident examples, for each p in ``fractions``: the expected
    mean under a uniformly random tie-break, the block tied at the cut taken each with weight
    (slots left) / (block size). float (len(fractions),), NaN for no examples.

    Example:
        >>> mean_of_most_confident(np.array([1.0, -1.0, 0.0]), np.array([0.5, 0.5, 0.1]), np.array([0.34])).tolist()
        [0.0]
    """
    n = len(values)
    if n == 0:
        return np.full(len(fractions), np.nan)
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    descending = -np.asarray(confidence, dtype=np.float64)[order]  # ascending values of -confidence
    sums = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=np.float64)[order])])
    counts = np.array([n_most_confident(n, f) for f in fractions])
    cut_value = descending[counts - 1]
    before = np.searchsorted(descending, cut_value, side="left")  # strictly more confident
    through = np.searchsorted(descending, cut_value, side="right")  # end of the tied block
    block_sums = sums[through] - sums[before]
    taken = sums[before] + block_sums * (counts - before) / (through - before)
    return taken / counts


def accuracy_at(correct: np.ndarray, confidence: np.ndarray, fraction: float) -> float:
    return float(accuracy_curve(correct, confidence, np.array([fraction]))[0])
