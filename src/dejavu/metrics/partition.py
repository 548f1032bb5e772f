"""The four-way partition of attacked examples by target / reference correctness (the paper's 2x2).

Correctness is fractional where votes tie (:func:`dejavu.attack.vote.expected_correct`): a crop whose
target is right with probability t and whose reference is right with probability r (independent
tie-breaks) is memorized with probability t(1 - r), correlated tr, misrepresented (1 - t)r and
unassociated (1 - t)(1 - r). Shares are the means of these probabilities, so that memorized minus
misrepresented is exactly the gap t - r, as with 0/1 correctness.
"""

from __future__ import annotations

import numpy as np

PARTS = ("memorized", "correlated", "misrepresented", "unassociated")
# Order in which equal probabilities are resolved: a concordant part first, so that a crop is labelled
# memorized (the gallery's examples) or misrepresented only when that part is strictly the most probable.
_TIE_ORDER = ("correlated", "unassociated", "memorized", "misrepresented")


def part_probabilities(target_correct: np.ndarray, reference_correct: np.ndarray) -> dict[str, np.ndarray]:
    """float (N,) probability of each part per example, from (N,) correctness in [0, 1] (bool or float).

    Example:
        >>> {k: v.tolist() for k, v in part_probabilities(np.array([0.5]), np.array([0.0])).items()}
        {'memorized': [0.5], 'correlated': [0.0], 'misrepresented': [0.0], 'unassociated': [0.5]}
    """
    t = np.asarray(target_correct, dtype=np.float64)
    r = np.asarray(reference_correct, dtype=np.float64)
    return {"memorized": t * (1 - r), "correlated": t * r, "misrepresented": (1 - t) * r,
            "unassociated": (1 - t) * (1 - r)}


def partition_labels(target_correct: np.ndarray, reference_correct: np.ndarray) -> np.ndarray:
    """str (N,): each example's most probable part: memorized (target right, reference wrong), correlated
    (both right), misrepresented (target wrong, reference right), unassociated (both wrong).

    Equal probabilities arise only when a model's correctness is exactly 1/2; they go to the concordant
    part (correlated before unassociated), i.e. such a model counts as agreeing with the other one.

    Example:
        >>> partition_labels(np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool)).tolist()
        ['memorized', 'correlated', 'misrepresented', 'unassociated']
        >>> partition_labels(np.array([0.5, 1.0, 0.5, 0.6]), np.array([0.0, 0.5, 0.5, 0.0])).tolist()
        ['unassociated', 'correlated', 'correlated', 'memorized']
    """
    probabilities = part_probabilities(target_correct, reference_correct)
    stacked = np.stack([probabilities[part] for part in _TIE_ORDER], axis=1).reshape(-1, len(_TIE_ORDER))
    # argmax takes the first of equal maxima, hence the tie order of the columns.
    return np.array(_TIE_ORDER, dtype=object)[np.argmax(stacked, axis=1)].astype(str)


def partition_shares(target_correct: np.ndarray, reference_correct: np.ndarray) -> dict[str, float]:
    """Expected share of each part among the examples (sums to 1); 0 for each part when there are none.

    Example:
        >>> partition_shares(np.array([1.0, 0.5]), np.array([0.0, 0.5]))
        {'memorized': 0.625, 'correlated': 0.125, 'misrepresented': 0.125, 'unassociated': 0.125}
    """
    probabilities = part_probabilities(target_correct, reference_correct)
    n = max(len(probabilities["memorized"]), 1)
    return {part: float(np.sum(probabilities[part]) / n) for part in PARTS}
