"""Neighbour votes -> top-1 / top-5 predictions, their expected correctness, and confidence (minus the
vote's entropy).

Votes of k neighbours tie often (two classes with 3 votes each among k = 20). Breaking a tie by label
order would favour low labels, and counting a class with no vote as a top-5 guess would credit the
attack with answers it never gave; :func:`expected_correct` instead scores each crop by its expected
correctness under a uniformly random tie-break among voted classes, the convention the top-p curve
uses for crops tied at its confidence cut (:mod:`dejavu.metrics.population`).
"""

from __future__ import annotations

import math

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
    """int (Q, top) labels by decreasing vote; ties go to the smaller label (deterministic).

    For display; correctness is :func:`expected_correct`, which no tie order decides."""
    top = min(top, counts.shape[1])
    return np.argsort(-counts, axis=1, kind="stable")[:, :top]


def voted_top(counts: np.ndarray, top: int = 5) -> list[list[int]]:
    """Per row of int (Q, C) counts, the labels of :func:`top_predictions` that received a vote (at most
    ``top``, fewer when fewer classes were voted): a class with no vote is never a prediction.

    Example:
        >>> voted_top(np.array([[0, 3, 3, 0, 0, 1], [5, 0, 0, 0, 0, 0]]), 5)
        [[1, 2, 5], [0]]
    """
    order = top_predictions(counts, top)
    voted = np.take_along_axis(counts, order, axis=1) > 0
    return [[label for label, keep in zip(row, mask) if keep] for row, mask in zip(order.tolist(), voted.tolist())]


def expected_correct(counts: np.ndarray, labels: np.ndarray, top: int) -> np.ndarray:
    """float (Q,) in [0, 1]: the probability that the true label is among the ``top`` predictions when
    ties are broken uniformly at random, from int (Q, C) vote counts and int (Q,) true labels.

    With ``g`` classes voted more than the true label and ``e`` voted as much (the true label
    included), the top ``top`` hold the true label surely when ``g + e <= top``, never when
    ``g >= top``, and otherwise with probability ``(top - g) / e`` (that many of the ``e`` tied slots
    are left). A true label with no vote is never correct: a class no neighbour carries is not predicted.

    Example:
        >>> counts = np.array([[3, 3, 0, 0, 0, 0], [2, 2, 2, 2, 2, 0], [0, 4, 1, 0, 0, 0]])
        >>> expected_correct(counts, np.array([0, 0, 0]), top=1).tolist()
        [0.5, 0.2, 0.0]
        >>> expected_correct(counts, np.array([0, 0, 0]), top=5).tolist()
        [1.0, 1.0, 0.0]
    """
    counts = np.asarray(counts)
    true = counts[np.arange(len(counts)), np.asarray(labels, dtype=np.int64)][:, None]
    greater = np.sum(counts > true, axis=1)
    equal = np.sum(counts == true, axis=1)
    chance = np.clip((top - greater) / equal, 0.0, 1.0)
    return np.where(true[:, 0] > 0, chance, 0.0)


def confidence(counts: np.ndarray) -> np.ndarray:
    """Minus the entropy (nats) of each vote: 0 for a unanimous vote, lower when split.

    Integer vote counts get an exact tie rule: two votes get the very same float exactly when their
    entropies are equal, also for different counts (entropy ln k - (1/k) ln prod c^c, so equal integers
    prod c^c tie: (18, 12, 8, 8, 4) and (12, 12, 12, 12, 2) of k = 50 do). Summing floats would leave such
    ties 1 ulp apart, and rounding would merge entropies that really differ (by < 1e-6 at k = 50); the
    most-confident cuts rank by these values. Float counts (a classifier's probabilities) are summed.

    Example:
        >>> confidence(np.array([[4, 0], [2, 2]])).round(4).tolist()
        [0.0, -0.6931]
        >>> a, b = confidence(np.array([[18, 12, 8, 8, 4], [12, 12, 12, 12, 2]])); bool(a == b)
        True
    """
    counts = np.asarray(counts)
    if counts.size and np.issubdtype(counts.dtype, np.integer):
        return _exact_confidence(counts)
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return terms.sum(axis=1)


def _exact_confidence(counts: np.ndarray) -> np.ndarray:
    """:func:`confidence` of int (Q, C) counts, one Python big-integer product per distinct sorted vote
    (few: votes of k neighbours take few shapes), so that the float depends on (k, prod c^c) only."""
    shapes, inverse = np.unique(np.sort(counts, axis=1), axis=0, return_inverse=True)
    values = np.empty(len(shapes))
    for i, shape in enumerate(shapes.tolist()):
        k = sum(shape)
        product = math.prod(c ** c for c in shape if c)
        values[i] = 0.0 if product == k ** k else math.log(product) / k - math.log(k)
    return values[inverse.reshape(-1)]
