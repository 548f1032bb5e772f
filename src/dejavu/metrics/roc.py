"""Membership-inference view of a score: ROC curve, AUC and TPR at a fixed FPR, with bootstrap intervals.

Members and non-members each carry a score; a higher score means "more likely a member". At a
threshold ``t`` every example with ``score >= t`` is called a member. Thresholds run over the distinct
scores from the highest down, so examples with equal scores (ties; déjà vu scores are multiples of
``1/k``) always cross together: one step of the curve moves FPR and TPR at once, never one tied
example at a time in some arbitrary order.

Everything works on tallies: the distinct scores, and how many members and non-members have each.
That makes the curve and the AUC a cumulative sum (one sort, no pairwise comparison), and the
bootstrap cheap: resampling ``n`` examples with replacement is a multinomial draw of ``n`` over the
tallies (the same distribution as drawing ``n`` indices, done in O(distinct scores)).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Curve points kept in metrics.json (the full curve has one point per distinct score).
CURVE_POINTS = 200
# Bootstrap resamples handled per chunk are capped so chunk x distinct scores stays about this size.
CHUNK_CELLS = 2_000_000


def _scores(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} scores must be finite numbers")
    return scores


def _tallies(members, nonmembers, require: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (ascending) and how many members / non-members have each."""
    m, n = _scores(members, "member"), _scores(nonmembers, "non-member")
    if require and (len(m) == 0 or len(n) == 0):
        raise ValueError(f"an ROC needs at least one member and one non-member (got {len(m)} and {len(n)})")
    values, inverse = np.unique(np.concatenate([m, n]), return_inverse=True)
    inverse = inverse.ravel()
    m_counts = np.bincount(inverse[: len(m)], minlength=len(values))
    n_counts = np.bincount(inverse[len(m):], minlength=len(values))
    return values, m_counts, n_counts


def _cumulative(counts: np.ndarray) -> np.ndarray:
    """Examples at or above each threshold, thresholds from the highest score down, with a leading 0
    (the threshold above every score): shape (..., G + 1), integers."""
    above = np.cumsum(counts[..., ::-1], axis=-1)
    return np.concatenate([np.zeros(above.shape[:-1] + (1,), dtype=above.dtype), above], axis=-1)


def _auc_of_tallies(m_counts: np.ndarray, n_counts: np.ndarray) -> np.ndarray:
    """P(member > non-member) + 0.5 P(tie) along the last axis (the Mann-Whitney U over m n)."""
    m_total = m_counts.sum(axis=-1)
    n_total = n_counts.sum(axis=-1)
    n_below = np.cumsum(n_counts, axis=-1) - n_counts  # non-members strictly below each score
    wins = np.sum(m_counts * (n_below + 0.5 * n_counts), axis=-1)
    return wins / (m_total * n_total)


def _tpr_at_fpr_of_tallies(m_counts: np.ndarray, n_counts: np.ndarray, fpr: float) -> np.ndarray:
    """Largest TPR among the curve's points with FPR <= ``fpr`` (both rates only grow along the curve,
    so it is the TPR of the last such point)."""
    tp, fp = _cumulative(m_counts), _cumulative(n_counts)
    n_total = fp[..., -1:]
    # Compared in counts: FPR <= fpr  <=>  false positives <= fpr * n (the slack absorbs rounding of the product).
    allowed = fp <= fpr * n_total * (1 + 1e-12) + 1e-9
    last = np.sum(allowed, axis=-1, keepdims=True) - 1  # always >= 0: the leading point has FPR 0
    return np.take_along_axis(tp, last, axis=-1)[..., 0] / tp[..., -1]


def roc_curve(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of "score >= threshold means member": ``(fpr, tpr, thresholds)``, one point per threshold.

    ``thresholds`` are ``+inf`` (nothing called a member: the point (0, 0)) followed by the distinct
    scores in decreasing order; the last one is the lowest score, where everything is called a member
    (the point (1, 1)). FPR and TPR never decrease along the curve; tied scores cross together.

    Example:
        >>> fpr, tpr, thr = roc_curve([3, 2, 2], [2, 1])
        >>> fpr.tolist(), tpr.tolist(), thr.tolist()
        ([0.0, 0.0, 0.5, 1.0], [0.0, 0.3333333333333333, 1.0, 1.0], [inf, 3.0, 2.0, 1.0])
    """
    values, m_counts, n_counts = _tallies(member_scores, nonmember_scores)
    tp, fp = _cumulative(m_counts), _cumulative(n_counts)
    thresholds = np.concatenate([[np.inf], values[::-1]])
    return fp / fp[-1], tp / tp[-1], thresholds


def auc(member_scores, nonmember_scores) -> float:
    """Area under the ROC: the probability that a random member scores above a random non-member,
    ties counting one half (the Mann-Whitney U statistic divided by ``m n``). 0.5 is chance.

    Example:
        >>> auc([1, 1, 0], [1, 0, 0])  # 9 pairs: 4 wins, 4 ties -> (4 + 0.5 * 4) / 9
        0.6666666666666666
    """
    _, m_counts, n_counts = _tallies(member_scores, nonmember_scores)
    return float(_auc_of_tallies(m_counts, n_counts))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float) -> float:
    """The largest TPR of a curve point whose FPR is at most ``fpr``: conservative, no interpolation
    towards a point above the target. With ``n`` non-members FPR moves in steps of at least ``1/n``,
    so for ``fpr < 1/n`` this is the TPR at FPR 0 (members scoring above every non-member).

    Example:
        >>> tpr_at_fpr([0.9, 0.8, 0.3], [0.85, 0.1, 0.05, 0.0], 0.25)  # threshold 0.3: 3 of 3, 1 of 4
        1.0
        >>> tpr_at_fpr([0.9, 0.8, 0.3], [0.85, 0.1, 0.05, 0.0], 0.2)   # only 0.9 clears every non-member
        0.3333333333333333
    """
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    _, m_counts, n_counts = _tallies(member_scores, nonmember_scores)
    return float(_tpr_at_fpr_of_tallies(m_counts, n_counts, fpr))


def _thin(fpr: np.ndarray, tpr: np.ndarray, min_fpr: float, points: int = CURVE_POINTS) -> tuple[list, list]:
    """At most ``points`` vertices of the curve (always the first and last): half spread evenly along
    the curve, half at FPRs spaced evenly on a log scale from ``min_fpr`` to 1, where a log-FPR plot
    needs them. Every kept point is a true vertex of the curve."""
    if len(fpr) <= points:
        return fpr.tolist(), tpr.tolist()
    even = np.linspace(0, len(fpr) - 1, points // 2)
    targets = np.geomspace(min(max(min_fpr, 1e-12), 1.0), 1.0, points - points // 2 - 2)
    logged = np.searchsorted(fpr, targets, side="right") - 1
    keep = np.unique(np.concatenate([[0, len(fpr) - 1], np.round(even).astype(int), np.clip(logged, 0, None)]))
    return fpr[keep].tolist(), tpr[keep].tolist()


def _key(fpr: float) -> str:
    return f"tpr_at_fpr_{fpr:g}"


def roc_summary(
    member_scores, nonmember_scores, *, fprs: Sequence[float] = (0.01, 0.001), bootstrap: int = 2000,
    level: float = 0.95, seed: int = 0,
) -> dict:
    """AUC and TPR at each FPR in ``fprs``, each with a percentile bootstrap interval, and the curve.

    Keys: ``auc``, ``auc_ci``; for each FPR f, ``tpr_at_fpr_{f:g}`` (``tpr_at_fpr_0.01``,
    ``tpr_at_fpr_0.001``) and ``..._ci``; ``ci_level``, ``bootstrap``, ``n_members``, ``n_nonmembers``,
    ``min_measurable_fpr``, ``curve`` {``fpr``, ``tpr``} (at most 200 vertices).

    Intervals: members and non-members are resampled separately (each with replacement, at its own
    size; two independent streams of one seeded ``numpy`` Generator), ``bootstrap`` times; the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled statistic.

    With ``n`` non-members an FPR below ``1/n`` cannot be measured: the smallest non-zero FPR is one
    false positive, ``1/n``. ``min_measurable_fpr`` reports ``1/n``; for a target FPR below it the
    TPR given is the TPR at FPR 0 (the share of members scoring above every non-member), which is
    conservative, not an estimate of the TPR at that FPR.

    With no member or no non-member every statistic is NaN and the curve is empty.
    """
    fprs = [float(f) for f in fprs]
    values, m_counts, n_counts = _tallies(member_scores, nonmember_scores, require=False)
    m_total, n_total = int(m_counts.sum()), int(n_counts.sum())
    nan_pair = [float("nan"), float("nan")]
    out: dict = {"auc": float("nan"), "auc_ci": nan_pair}
    for f in fprs:
        out[_key(f)] = float("nan")
        out[_key(f) + "_ci"] = list(nan_pair)
    out.update(ci_level=level, bootstrap=int(bootstrap), n_members=m_total, n_nonmembers=n_total,
               min_measurable_fpr=1 / n_total if n_total else float("nan"), curve={"fpr": [], "tpr": []})
    if m_total == 0 or n_total == 0:
        return out

    out["auc"] = float(_auc_of_tallies(m_counts, n_counts))
    for f in fprs:
        out[_key(f)] = float(_tpr_at_fpr_of_tallies(m_counts, n_counts, f))
    fp, tp = _cumulative(n_counts), _cumulative(m_counts)
    out["curve"]["fpr"], out["curve"]["tpr"] = _thin(fp / n_total, tp / m_total, 1 / n_total)

    if bootstrap > 0:
        member_rng, nonmember_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        m_p, n_p = m_counts / m_total, n_counts / n_total
        stats = {name: np.empty(bootstrap) for name in ["auc", *map(_key, fprs)]}
        chunk = max(1, min(bootstrap, CHUNK_CELLS // len(values)))
        for start in range(0, bootstrap, chunk):
            stop = min(start + chunk, bootstrap)
            m_draw = member_rng.multinomial(m_total, m_p, size=stop - start)
            n_draw = nonmember_rng.multinomial(n_total, n_p, size=stop - start)
            stats["auc"][start:stop] = _auc_of_tallies(m_draw, n_draw)
            for f in fprs:
                stats[_key(f)][start:stop] = _tpr_at_fpr_of_tallies(m_draw, n_draw, f)
        tail = (1 - level) / 2
        for name, draws in stats.items():
            low, high = np.quantile(draws, [tail, 1 - tail])
            out[f"{name}_ci"] = [float(low), float(high)]
    return out
