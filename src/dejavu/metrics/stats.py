"""Paired statistics of the target-over-reference gap: exact McNemar test and bootstrap intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest


def as_float(value: Any) -> float:
    """A metric as float; missing, null (an empty direction) or empty (a CSV cell) becomes NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs: ``b`` target right & reference wrong, ``c`` the reverse; two-sided exact p."""

    b: int
    c: int
    p_value: float


def mcnemar_exact(target_correct: np.ndarray, reference_correct: np.ndarray) -> McNemar:
    """Exact McNemar test: under H0 (no gap) each discordant pair is a fair coin.

    Example:
        >>> mcnemar_exact(np.array([1, 1, 1, 0], bool), np.array([0, 0, 0, 0], bool)).p_value
        0.25
    """
    t = np.asarray(target_correct, dtype=bool)
    r = np.asarray(reference_correct, dtype=bool)
    b = int(np.sum(t & ~r))
    c = int(np.sum(~t & r))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return McNemar(b, c, p)


def bootstrap_gap_ci(
    directions: list[tuple[np.ndarray, np.ndarray]],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    chunk: int = 250,
) -> tuple[float, float]:
    """Percentile interval of the pooled gap: the mean over directions of (target - reference accuracy).

    Examples are resampled with replacement within each direction (the directions are independent
    samples of different models), ``n_resamples`` times, in chunks so memory stays bounded.

    Example:
        >>> t = np.array([1, 1, 0, 1] * 25, bool); r = np.array([0, 1, 0, 1] * 25, bool)
        >>> lo, hi = bootstrap_gap_ci([(t, r)], seed=0); lo < 0.25 < hi
        True
    """
    rng = np.random.default_rng(seed)
    totals = np.zeros(n_resamples)
    used = 0
    for target, reference in directions:
        diff = np.asarray(target, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
        if len(diff) == 0:
            continue
        used += 1
        for start in range(0, n_resamples, chunk):
            stop = min(start + chunk, n_resamples)
            rows = rng.integers(0, len(diff), size=(stop - start, len(diff)))
            totals[start:stop] += diff[rows].mean(axis=1)
    if used == 0:
        return (float("nan"), float("nan"))
    gaps = totals / used
    tail = (1 - level) / 2
    low, high = np.quantile(gaps, [tail, 1 - tail])
    return (float(low), float(high))
