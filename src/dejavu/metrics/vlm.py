"""The vision-language test's statistics (Jayaraman et al. 2024): per-record object precision and recall of
the objects a caption's public neighbours reveal, and the population precision / recall gaps (PPG, PRG).

A record's prediction is the union of the objects of its k neighbours; its confidence the mean share of the
neighbours holding each predicted object (1: all k agree). A gap counts records, not amounts: PPG is the share
of records whose target precision beats the reference's minus the share where it is lower. Its paired test
is the sign test on those wins and losses (McNemar's exact test, :func:`dejavu.metrics.stats.mcnemar_exact`),
its interval a bootstrap over records; ``recall_gap_auc`` is the Mann-Whitney AUC of the target's recalls
against the reference's (0.5: the two models recall alike; 1: every target recall above every reference one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from dejavu.metrics.population import n_most_confident
from dejavu.metrics.roc import auc
from dejavu.metrics.stats import as_float, bootstrap_gap_ci, mcnemar_exact
from dejavu.metrics.vlm_schema import Vlm

# The follow-up's most-confident fractions (0.1 / 1 / 10 %), and all records.
TOP_FRACTIONS = (0.001, 0.01, 0.1, 1.0)


def predicted_objects(neighbour_objects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bool (N, k, C) objects of each record's k neighbours -> (bool (N, C) their union, float (N,) confidence).

    Example:
        >>> objects = np.array([[[1, 0, 0], [1, 1, 0]]], bool)  # two neighbours: {0}, {0, 1}
        >>> union, confidence = predicted_objects(objects); union.tolist(), confidence.tolist()
        ([[True, True, False]], [0.75])
    """
    votes = neighbour_objects.mean(axis=1)
    union = votes > 0
    confidence = np.where(union.any(axis=1), (votes * union).sum(axis=1) / np.maximum(union.sum(axis=1), 1), 0.0)
    return union, confidence


def precision_recall(predicted: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per record |true & predicted| / |predicted| and / |true| (0 for an empty prediction or object set).

    Example:
        >>> p, r = precision_recall(np.array([[1, 1, 0, 0]], bool), np.array([[1, 0, 1, 0]], bool))
        >>> p.tolist(), r.tolist()
        ([0.5], [0.5])
    """
    hits = (predicted & true).sum(axis=1).astype(np.float64)
    return hits / np.maximum(predicted.sum(axis=1), 1), hits / np.maximum(true.sum(axis=1), 1)


def population_gap(target: np.ndarray, reference: np.ndarray) -> float:
    """Share of records where ``target`` > ``reference`` minus the share where it is lower (NaN with none).

    Example:
        >>> population_gap(np.array([0.5, 1.0, 0.2, 0.3]), np.array([0.25, 1.0, 0.4, 0.1]))
        0.25
    """
    if len(target) == 0:
        return float("nan")
    return float(np.mean(target > reference) - np.mean(target < reference))


def _gap_test(directions: list[tuple[np.ndarray, np.ndarray]], bootstrap: int, level: float, seed: int) -> dict:
    wins = [(t > r).astype(np.float64) for t, r in directions]
    losses = [(t < r).astype(np.float64) for t, r in directions]
    test = mcnemar_exact(np.concatenate(wins), np.concatenate(losses))
    gaps = [population_gap(t, r) for t, r in directions if len(t)]
    ci = bootstrap_gap_ci(list(zip(wins, losses)), bootstrap, level, seed)
    return {"gap": float(np.mean(gaps)) if gaps else float("nan"), "p": test.p_value, "wins": test.b,
            "losses": test.c, "ci": [float(ci[0]), float(ci[1])]}


def gap_summary(directions: dict[str, dict[str, np.ndarray]], bootstrap: int, level: float, seed: int) -> dict:
    """PPG, PRG (each a mean over directions, with the sign test over all records and a bootstrap interval),
    the recall-gap AUC, mean precision and recall per model, and the gaps among the most confident records
    (by the target's confidence, within each direction).

    ``directions``: name -> {"target_precision", "reference_precision", "target_recall", "reference_recall",
    "target_confidence"}, each (N,) float.
    """
    parts = list(directions.values())
    out: dict = {"n": int(sum(len(d["target_recall"]) for d in parts))}
    for measure, letter in (("precision", "p"), ("recall", "r")):
        test = _gap_test([(d[f"target_{measure}"], d[f"reference_{measure}"]) for d in parts], bootstrap, level, seed)
        name = f"p{letter}g"
        out.update({name: test["gap"], f"{name}_p": test["p"], f"{name}_ci": test["ci"],
                    f"{name}_wins": test["wins"], f"{name}_losses": test["losses"]})
        for model in ("target", "reference"):
            values = np.concatenate([d[f"{model}_{measure}"] for d in parts])
            out[f"{model}_{measure}"] = float(values.mean()) if len(values) else float("nan")
    target_recall = np.concatenate([d["target_recall"] for d in parts])
    reference_recall = np.concatenate([d["reference_recall"] for d in parts])
    out["recall_gap_auc"] = auc(target_recall, reference_recall) if len(target_recall) else float("nan")
    out["top"] = {}
    for fraction in TOP_FRACTIONS:
        chosen = []
        for d in parts:
            keep = n_most_confident(len(d["target_confidence"]), fraction)
            order = np.argsort(-d["target_confidence"], kind="stable")[:keep]
            chosen.append({key: value[order] for key, value in d.items()})
        out["top"][f"{fraction:g}"] = {
            "n": int(sum(len(c["target_recall"]) for c in chosen)),
            "ppg": float(np.mean([population_gap(c["target_precision"], c["reference_precision"]) for c in chosen])),
            "prg": float(np.mean([population_gap(c["target_recall"], c["reference_recall"]) for c in chosen])),
        }
    return out


def retrieval_recall(text: np.ndarray, images: np.ndarray, k: int) -> float:
    """Share of captions whose own image (same row) is among their ``k`` most similar images (rows of L2-normal
    embeddings): whether a CLIP model matches captions with images at all."""
    similarity = text @ images.T
    own = np.diag(similarity)
    better = (similarity > own[:, None]).sum(axis=1)
    return float(np.mean(better < k)) if len(own) else float("nan")


def detected(ppg: float, ppg_p: float, prg: float, prg_p: float, alpha: float) -> bool:
    """Vision-language déjà vu: both gaps positive, both tests below ``alpha`` (the verdict, the sweep's seed
    count and the findings table all judge by this)."""
    return ppg > 0 and prg > 0 and ppg_p < alpha and prg_p < alpha


# The numbers the verdict judges, in :func:`detected`'s order.
GAP_FIELDS = ("ppg", "ppg_p", "prg", "prg_p")


def judged_gaps(vlm: Mapping[str, Any] | Vlm) -> tuple[float, float, float, float]:
    """(PPG, its p, PRG, its p) as the verdict judges them: with a text-only reference (an ``excess``) the gaps
    beyond the control's, else the pooled ones. ``vlm``: :func:`gap_summary`'s dict (the vlm stage adds
    ``excess``) or the typed ``metrics.json["vlm"]`` (:class:`dejavu.metrics.vlm_schema.Vlm`), so that the
    verdict and the sweep's seed count cannot judge different numbers.

    Example:
        >>> plain = {"ppg": 0.2, "ppg_p": 1e-4, "prg": 0.1, "prg_p": 1e-3}
        >>> judged_gaps(plain), judged_gaps({**plain, "excess": {"ppg": 0.05, "ppg_p": 0.3, "prg": 0.0, "prg_p": 0.9}})
        ((0.2, 0.0001, 0.1, 0.001), (0.05, 0.3, 0.0, 0.9))
    """
    def get(source: Any, name: str) -> Any:
        return source[name] if isinstance(source, Mapping) else getattr(source, name)

    excess = vlm.get("excess") if isinstance(vlm, Mapping) else getattr(vlm, "excess", None)
    ppg, ppg_p, prg, prg_p = (as_float(get(excess if excess else vlm, name)) for name in GAP_FIELDS)
    return ppg, ppg_p, prg, prg_p


def vlm_verdict(summary: dict, alpha: float) -> str:
    """The vision-language test's one-line verdict from :func:`gap_summary`'s pooled numbers and the retrieval
    check (``summary["retrieval"]``: per model its recall and ``chance``; ``failures``: why there is none). With
    a text-only reference (``summary["excess"]``) the test is on the gaps beyond the control's."""
    if summary.get("failures"):
        return "No verdict (vision-language): " + "; ".join(summary["failures"])
    ppg, ppg_p, prg, prg_p = judged_gaps(summary)
    what = "beyond the control's (text-only reference), " if summary.get("excess") else ""
    numbers = f"{what}PPG {ppg:+.3f} (p = {ppg_p:.2g}), PRG {prg:+.3f} (p = {prg_p:.2g}) over {summary['n']} training captions"
    if detected(ppg, ppg_p, prg, prg_p, alpha):
        return f"Déjà vu memorization detected (vision-language): {numbers}"
    return f"No significant vision-language déjà vu at alpha = {alpha:g}: {numbers}"


def sign_scores(directions: dict[str, dict[str, np.ndarray]], measure: str) -> np.ndarray:
    """Every record's +1 (target better), 0 or -1 on ``measure`` ("precision" or "recall"), directions pooled."""
    parts = [np.sign(d[f"target_{measure}"] - d[f"reference_{measure}"]) for d in directions.values()]
    return np.concatenate(parts) if parts else np.zeros(0)


def excess_over_control(train: np.ndarray, control: np.ndarray, bootstrap: int, level: float, seed: int) -> dict:
    """The training records' mean sign score minus the control's (a gap beyond what the reference's own
    difference from the models explains, for a reference of another kind), the two-sided Mann-Whitney p of the
    two samples, and a bootstrap interval (each group resampled on its own).

    Example:
        >>> out = excess_over_control(np.array([1, 1, 1, 0] * 25), np.array([1, 0, -1, 0] * 25), 200, 0.95, 0)
        >>> out["gap"], out["p"] < 0.01
        (0.75, True)
    """
    train, control = np.asarray(train, float), np.asarray(control, float)
    if not len(train) or not len(control):
        return {"gap": float("nan"), "p": float("nan"), "ci": [float("nan"), float("nan")]}
    rng = np.random.default_rng(seed)
    draws = (rng.choice(train, (bootstrap, len(train))).mean(axis=1)
             - rng.choice(control, (bootstrap, len(control))).mean(axis=1))
    tail = (1 - level) / 2
    same = np.all(train == train[0]) and np.all(control == train[0])
    p = 1.0 if same else float(mannwhitneyu(train, control, alternative="two-sided").pvalue)
    return {"gap": float(train.mean() - control.mean()), "p": p,
            "ci": [float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))]}
