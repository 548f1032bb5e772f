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

import numpy as np
from scipy.stats import binomtest, mannwhitneyu

from dejavu.metrics.population import mean_of_most_confident, n_most_confident
from dejavu.metrics.roc import auc
from dejavu.metrics.stats import bootstrap_gap_ci, mcnemar_exact

# The follow-up's most-confident fractions (0.1 / 1 / 10 %), and all records.
TOP_FRACTIONS = (0.001, 0.01, 0.1, 1.0)


def predicted_objects(neighbour_objects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bool (N, k, C) objects of each record's k neighbours -> (bool (N, C) their union, float (N,) confidence).

    Example:
        >>> objects = np.array([[[1, 0, 0], [1, 1, 0]]], bool)  # two neighbours: {0}, {0, 1}
        >>> union, confidence = predicted_objects(objects); union.tolist(), confidence.tolist()
        ([[True, True, False]], [0.75])
    """
    k = neighbour_objects.shape[1]
    votes = neighbour_objects.sum(axis=1)  # integers: equal shares give the very same float below
    union = votes > 0
    confidence = np.where(union.any(axis=1), (votes * union).sum(axis=1) / np.maximum(k * union.sum(axis=1), 1), 0.0)
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
    (by the target's confidence, within each direction; records tied at the cut count fractionally, as in
    :func:`dejavu.metrics.population.mean_of_most_confident`).

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
        # The image test's rule: records tied at the cut count fractionally (the expected gap over tie-breaks).
        gaps = {measure: [float(mean_of_most_confident(np.sign(d[f"target_{measure}"] - d[f"reference_{measure}"]),
                                                       d["target_confidence"], np.array([fraction]))[0])
                          for d in parts if len(d["target_confidence"])] for measure in ("precision", "recall")}
        out["top"][f"{fraction:g}"] = {
            "n": int(sum(n_most_confident(len(d["target_confidence"]), fraction) for d in parts)),
            "ppg": float(np.mean(gaps["precision"])) if gaps["precision"] else float("nan"),
            "prg": float(np.mean(gaps["recall"])) if gaps["recall"] else float("nan"),
        }
    return out


def retrieval_recall(text: np.ndarray, images: np.ndarray, k: int) -> float:
    """Share of captions whose own image (same row) is among their ``k`` most similar images (rows of L2-normal
    embeddings): whether a CLIP model matches captions with images at all."""
    similarity = text @ images.T
    own = np.diag(similarity)
    better = (similarity > own[:, None]).sum(axis=1)
    return float(np.mean(better < k)) if len(own) else float("nan")


def retrieval_failures(retrieval: Mapping[str, float], n: int, k: int, alpha: float, advice: str) -> list[str]:
    """The vision-language test's gate: each model must match T's ``n`` captions with their own images above
    chance (``retrieval``: per model its recall@``k`` among T's images, and ``chance``, k / n), one-sided
    binomial at ``alpha``; a failure in words per model that does not (no verdict: it learnt no image-caption
    pairs, so what its captions retrieve says nothing of memory).

    Example:
        >>> retrieval_failures({"chance": 0.1, "A": 0.5, "B": 0.1}, 100, 10, 0.01, "train longer")[0][:40]
        "model B matches T's captions with their "
    """
    chance = float(retrieval["chance"])
    failures = []
    for model, recall in retrieval.items():
        if model == "chance":
            continue
        p = binomtest(int(round(recall * n)), n, chance, alternative="greater").pvalue if n else 1.0
        if not p < alpha:
            failures.append(f"model {model} matches T's captions with their own images no better than chance "
                            f"(recall@{k} {recall:.1%}, chance {chance:.1%}): it did not learn image-caption pairs; "
                            + advice)
    return failures


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
