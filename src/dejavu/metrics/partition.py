"""The four-way partition of attacked examples by target / reference correctness (the paper's 2x2)."""

from __future__ import annotations

import numpy as np

PARTS = ("memorized", "correlated", "misrepresented", "unassociated")


def partition_labels(target_correct: np.ndarray, reference_correct: np.ndarray) -> np.ndarray:
    """Per example: memorized (target right, reference wrong), correlated (both right),
    misrepresented (target wrong, reference right), unassociated (both wrong).

    Example:
        >>> partition_labels(np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool)).tolist()
        ['memorized', 'correlated', 'misrepresented', 'unassociated']
    """
    t = np.asarray(target_correct, dtype=bool)
    r = np.asarray(reference_correct, dtype=bool)
    code = (~t).astype(np.int64) * 2 + (t == r).astype(np.int64) * 1
    # code: t&~r -> 0, t&r -> 1, ~t&r -> 2, ~t&~r -> 3
    return np.array(PARTS, dtype=object)[code].astype(str)


def partition_shares(target_correct: np.ndarray, reference_correct: np.ndarray) -> dict[str, float]:
    """Share of each part among the examples (sums to 1)."""
    labels = partition_labels(target_correct, reference_correct)
    n = max(len(labels), 1)
    return {part: float(np.sum(labels == part) / n) for part in PARTS}
