"""Paired statistics of the target-over-reference gap: exact McNemar test and bootstrap intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

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

    ``target_correct`` and ``reference_correct`` are (N,) paired correctness, bool or in [0, 1] (the
    expected correctness of a tied vote, :func:`dejavu.attack.vote.expected_correct`). The exact test
    needs whole counts: ``b`` is the expected number of memorized pairs, sum of t(1 - r), and ``c`` of
    misrepresented ones, sum of (1 - t)r (independent tie-breaks), each rounded to the nearest integer
    (halves to even). With 0/1 correctness these are the plain discordant counts.

    Examples:
        >>> mcnemar_exact(np.array([1, 1, 1, 0], bool), np.array([0, 0, 0, 0], bool)).p_value
        0.25
        >>> test = mcnemar_exact(np.array([1, 1, 0.5, 0.5]), np.array([0, 0.5, 0, 1])); (test.b, test.c)
        (2, 0)
    """
    t = np.asarray(target_correct, dtype=np.float64)
    r = np.asarray(reference_correct, dtype=np.float64)
    # Sums of fractions such as 1/3 miss whole numbers by rounding error; round() absorbs it.
    b = int(round(float(np.sum(t * (1 - r)))))
    c = int(round(float(np.sum((1 - t) * r))))
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

    Each direction is a pair of (N,) target and reference correctness, bool or in [0, 1] (fractional
    where votes tie: a resampled crop carries its expected correctness). Examples are resampled with
    replacement within each direction (the directions are independent samples of different models),
    ``n_resamples`` times, in chunks so memory stays bounded.

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


@dataclass(frozen=True)
class Excess:
    """A statistic's value on the attacked set minus its value on the control, with a percentile bootstrap
    interval (the two sets resampled independently) and a two-sided permutation p (set membership shuffled)."""

    value: float
    ci: tuple[float, float]
    p_value: float


def excess_test(attacked: dict[str, np.ndarray], control: dict[str, np.ndarray],
                statistic: Callable[[dict[str, np.ndarray]], float], n_resamples: int = 2000,
                level: float = 0.95, seed: int = 0) -> Excess:
    """``statistic(attacked) - statistic(control)`` for two tables of per-example columns (equal keys).

    The one-model test's question: is the target-over-classifier gap larger on the target's training crops
    than on crops neither saw? Under H0 the two sets' rows are exchangeable, so the p-value shuffles rows
    between them, ``n_resamples`` times, counting shuffles at least as extreme (in absolute value) as the
    observed difference, plus one (never 0). Seeded.

    Example:
        >>> a = {"d": np.array([1.0] * 30 + [0.0] * 10)}; t = {"d": np.array([0.0] * 40)}
        >>> out = excess_test(a, t, lambda rows: float(rows["d"].mean()), 500, seed=0)
        >>> out.value, out.p_value < 0.01, out.ci[0] > 0.5
        (0.75, True, True)
    """
    n_a, n_t = len(next(iter(attacked.values()))), len(next(iter(control.values())))
    nan = float("nan")
    if n_a == 0 or n_t == 0:
        return Excess(nan, (nan, nan), nan)
    observed = statistic(attacked) - statistic(control)
    if n_resamples < 1:
        return Excess(float(observed), (nan, nan), nan)
    rng = np.random.default_rng(seed)
    take = lambda rows, index: {key: value[index] for key, value in rows.items()}  # noqa: E731
    boot = np.array([statistic(take(attacked, rng.integers(0, n_a, n_a))) -
                     statistic(take(control, rng.integers(0, n_t, n_t))) for _ in range(n_resamples)])
    pooled = {key: np.concatenate([attacked[key], control[key]]) for key in attacked}
    extreme = 0
    for _ in range(n_resamples):
        order = rng.permutation(n_a + n_t)
        shuffled = statistic(take(pooled, order[:n_a])) - statistic(take(pooled, order[n_a:]))
        # The tolerance counts a shuffle equal to the observed value up to rounding as "as extreme".
        extreme += abs(shuffled) >= abs(observed) - 1e-12
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return Excess(float(observed), (float(low), float(high)), (extreme + 1) / (n_resamples + 1))
