"""Per-example attack tables (joined on ids) and their summary: pooled metrics, statistics, control."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dejavu.attack.vote import confidence, expected_correct, top_predictions, voted_top, vote
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.metrics.partition import PARTS, partition_labels, partition_shares
from dejavu.metrics.population import FRACTIONS, accuracy_at, accuracy_curve
from dejavu.metrics.outcomes import MIN_CONTROL_HALF, control_conclusive, decide_outcomes
from dejavu.metrics.roc import roc_summary
from dejavu.metrics.schema import (
    POOLED_MEANS, SCHEMA_VERSION, Calibration, Canaries, CanaryGroup, CanaryRoc, ClassRow,
    ControlSummary, Curve, DirectionSummary, ExcessGap, MetricsFile, OneModel, PooledSummary, Roc,
    from_json, json_key, to_json,
)
from dejavu.metrics.stats import bootstrap_gap_ci, excess_test, mcnemar_exact

# (direction, attacked set, target model, reference model). The swapped direction B cancels any
# overall quality difference between the two models when the two are pooled (as in the paper).
DIRECTIONS = (("A", "A", "A", "B"), ("B", "B", "B", "A"))


def _predict(neighbour_labels: np.ndarray, n_classes: int, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Votes of int (Q, k) neighbour labels against int (Q,) true labels: displayed predictions, expected
    top-1 / top-5 correctness (ties fractional), confidence and the true label's votes."""
    out = _predict_counts(vote(neighbour_labels, n_classes), labels)
    out["true_share"] = out["true_votes"] / max(neighbour_labels.shape[1], 1)
    return out


def _predict_counts(counts: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`_predict` of (Q, C) vote counts, or of class probabilities (the one-model test's classifier:
    a probability is a vote of weight p; ``true_votes`` is then the true class's probability)."""
    # How many of the k neighbours carry the true label (the probability of it, for a classifier).
    true_votes = counts[np.arange(len(labels)), labels]
    top5 = voted_top(counts, 5)
    return {
        # The arg-max always has a vote (k >= 1); among equal votes the smaller label is shown (display only).
        "top1": top_predictions(counts, 1)[:, 0],
        "top5": np.array([" ".join(map(str, row)) for row in top5]),
        # Rounded as written to samples.csv, so that the file recomputes metrics.json exactly.
        "correct": expected_correct(counts, labels, 1).round(6),
        "top5_correct": expected_correct(counts, labels, 5).round(6),
        "confidence": confidence(counts),
        "true_votes": true_votes,
    }


def dejavu_margin(target_true_share: np.ndarray, reference_true_share: np.ndarray) -> np.ndarray:
    """Per-example déjà vu score: the target's share of the k neighbours that carry the true label minus
    the reference's, in [-1, 1] (``(target votes - reference votes) / k``). Rounded to 6 decimals
    (shares are multiples of 1/k, so equal margins stay exactly equal and the ranking is unchanged).

    Example:
        >>> dejavu_margin(np.array([4, 1, 2]) / 5, np.array([1, 1, 5]) / 5).tolist()
        [0.6, 0.0, -0.6]
    """
    margin = np.asarray(target_true_share, dtype=np.float64) - np.asarray(reference_true_share, dtype=np.float64)
    return margin.round(6) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0


def direction_table(
    table: ImageTable, crops: dict[str, np.ndarray], ids: np.ndarray, direction: str,
    target: dict[str, np.ndarray], reference: dict[str, np.ndarray], target_model: str,
    reference_model: str, n_classes: int,
) -> dict[str, np.ndarray]:
    """One row per attacked id: both models' votes joined on the id, never on position.

    ``*_correct`` and ``*_top5_correct`` are expected correctness in [0, 1] under a random tie-break
    (:func:`dejavu.attack.vote.expected_correct`); ``*_top1`` / ``*_top5`` show the voted labels by
    decreasing vote, equal votes by label; ``partition`` is the most probable part
    (:func:`dejavu.metrics.partition.partition_labels`).

    A ``reference`` holding ``probabilities`` (the one-model test's correlation classifier) instead of
    ``neighbour_labels`` is scored on its class probabilities: ``reference_true_prob`` replaces
    ``reference_true_votes`` and ``dejavu_score`` is :func:`entropy_score`."""
    t_rows = index_of_ids(target["ids"], ids, f"neighbours of model {target_model}")
    labels = table.labels[index_of_ids(table.ids, ids, "dataset")]
    crop_rows = index_of_ids(crops["id"], ids, "crops.csv")
    t = _predict(target["neighbour_labels"][t_rows], n_classes, labels)
    classifier = "probabilities" in reference
    if classifier:
        r_rows = index_of_ids(reference["ids"], ids, f"probabilities of the {reference_model}")
        r = _predict_counts(reference["probabilities"][r_rows], labels)
    else:
        r_rows = index_of_ids(reference["ids"], ids, f"neighbours of model {reference_model}")
        r = _predict(reference["neighbour_labels"][r_rows], n_classes, labels)
    return {
        "id": ids,
        "direction": np.full(len(ids), direction),
        "label": labels,
        **{f"crop_{k}": crops[f"square_{k}"][crop_rows] for k in ("x0", "y0", "x1", "y1")},
        "target_model": np.full(len(ids), target_model),
        "target_top1": t["top1"],
        "target_top5": t["top5"],
        # Unrounded (samples.csv keeps every digit): the most-confident cuts rank by them.
        "target_confidence": t["confidence"],
        "reference_model": np.full(len(ids), reference_model),
        "reference_top1": r["top1"],
        "reference_top5": r["top5"],
        "reference_confidence": r["confidence"],
        "target_correct": t["correct"],
        "reference_correct": r["correct"],
        "target_top5_correct": t["top5_correct"],
        "reference_top5_correct": r["top5_correct"],
        "partition": partition_labels(t["correct"], r["correct"]),
        "target_true_votes": t["true_votes"],
        **({"reference_true_prob": r["true_votes"].round(6),
            "dejavu_score": entropy_score(t["confidence"], r["confidence"])} if classifier else
           {"reference_true_votes": r["true_votes"], "dejavu_score": dejavu_margin(t["true_share"], r["true_share"])}),
    }


def entropy_score(target_confidence: np.ndarray, classifier_confidence: np.ndarray) -> np.ndarray:
    """The one-model test's per-example score (Kokhlikyan et al. 2024): the classifier's entropy minus the
    kNN vote's, in nats (confidences are minus entropies): high where the target's neighbours agree on a
    class that the background alone leaves uncertain. It needs no label. Rounded to 6 decimals.

    Example:
        >>> entropy_score(np.array([0.0, -0.7]), np.array([-1.2, -0.2])).tolist()
        [1.2, -0.5]
    """
    score = np.asarray(target_confidence, np.float64) - np.asarray(classifier_confidence, np.float64)
    return score.round(6) + 0.0


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def attack_tables(
    table: ImageTable, crops: dict[str, np.ndarray], neighbours: dict[tuple[str, str], dict[str, np.ndarray]],
    n_classes: int, control_seed: int,
) -> dict[str, dict[str, np.ndarray]]:
    """``attack``: directions A and B; ``control``: T split at random into halves T1 (playing A) and T2 (B)."""
    attack = []
    for direction, attacked, target_model, reference_model in DIRECTIONS:
        ids = np.sort(neighbours[(target_model, attacked)]["ids"])
        attack.append(direction_table(
            table, crops, ids, direction, neighbours[(target_model, attacked)],
            neighbours[(reference_model, attacked)], target_model, reference_model, n_classes,
        ))
    held_out = np.sort(neighbours[("A", "T")]["ids"])
    shuffled = held_out[np.random.default_rng(control_seed).permutation(len(held_out))]
    halves = {"T1": np.sort(shuffled[: len(held_out) // 2]), "T2": np.sort(shuffled[len(held_out) // 2 :])}
    control = []
    for (direction, target_model, reference_model) in (("T1", "A", "B"), ("T2", "B", "A")):
        control.append(direction_table(
            table, crops, halves[direction], direction, neighbours[(target_model, "T")],
            neighbours[(reference_model, "T")], target_model, reference_model, n_classes,
        ))
    return {"attack": _concat(attack), "control": _concat(control)}


def one_model_tables(
    table: ImageTable, crops: dict[str, np.ndarray], neighbours: dict[tuple[str, str], dict[str, np.ndarray]],
    probabilities: dict[str, dict[str, np.ndarray]], n_classes: int, reference_model: str = "classifier",
) -> dict[str, dict[str, np.ndarray]]:
    """The one-model test's tables: ``attack`` is direction A (target A against the correlation classifier on
    A's crops), ``control`` direction T (the same two on every T crop: the classifier never trained on
    either set, the target trained on A only)."""
    out = {}
    for key, name in (("attack", "A"), ("control", "T")):
        ids = np.sort(neighbours[("A", name)]["ids"])
        out[key] = direction_table(table, crops, ids, name, neighbours[("A", name)], probabilities[name],
                                   "A", reference_model, n_classes)
    return out


def direction_summary(rows: dict[str, np.ndarray], gap_ci95: list[float] | None = None) -> DirectionSummary:
    """Accuracies (all, 20 %, 5 % most confident; top-1 and top-5), partition, McNemar, curve; ``gap_ci95``
    the direction's bootstrap interval (NaN when not given). Correctness is fractional where votes tie, so
    accuracies and shares are expectations under a random tie-break."""
    t_ok, r_ok = _correctness(rows)
    t_conf, r_conf = rows["target_confidence"], rows["reference_confidence"]
    nan = float("nan")
    acc = {
        "target_acc": float(t_ok.mean()) if len(t_ok) else nan,
        "reference_acc": float(r_ok.mean()) if len(r_ok) else nan,
        "target_acc_top20": accuracy_at(t_ok, t_conf, 0.20),
        "reference_acc_top20": accuracy_at(r_ok, r_conf, 0.20),
        "target_acc_top05": accuracy_at(t_ok, t_conf, 0.05),
        "reference_acc_top05": accuracy_at(r_ok, r_conf, 0.05),
    }
    test = mcnemar_exact(t_ok, r_ok)
    return DirectionSummary(
        n_attacked=int(len(t_ok)),
        target_top5_acc=float(rows["target_top5_correct"].mean()) if len(t_ok) else nan,
        reference_top5_acc=float(rows["reference_top5_correct"].mean()) if len(t_ok) else nan,
        **acc, **partition_shares(t_ok, r_ok),
        curve=Curve(fractions=FRACTIONS.tolist(), target=accuracy_curve(t_ok, t_conf).tolist(),
                    reference=accuracy_curve(r_ok, r_conf).tolist()),
        gap=acc["target_acc"] - acc["reference_acc"],
        dejavu_score_top20=acc["target_acc_top20"] - acc["reference_acc_top20"],
        dejavu_score_top05=acc["target_acc_top05"] - acc["reference_acc_top05"],
        mcnemar_p=test.p_value, mcnemar_b=test.b, mcnemar_c=test.c,
        gap_ci95=list(gap_ci95) if gap_ci95 is not None else [nan, nan],
    )


def pooled_summary(rows: dict[str, np.ndarray], metrics_config, seed: int) -> PooledSummary:
    """Both directions pooled as in the paper: each accuracy/share (``POOLED_MEANS``) is the mean over
    directions; McNemar on all paired examples; bootstrap interval of the pooled gap; per-direction detail."""
    names = list(dict.fromkeys(rows["direction"].tolist()))
    subsets = {name: _select(rows, rows["direction"] == name) for name in names}
    pairs = {name: _correctness(subset) for name, subset in subsets.items()}
    level, resamples = metrics_config.ci_level, metrics_config.bootstrap
    per_direction = {
        name: direction_summary(subset, list(bootstrap_gap_ci([pairs[name]], resamples, level, seed)))
        for name, subset in subsets.items()
    }
    details = list(per_direction.values())
    test = mcnemar_exact(*_correctness(rows))
    return PooledSummary(
        n_attacked=int(sum(d.n_attacked for d in details)),
        **{key: float(np.mean([getattr(d, key) for d in details])) for key in POOLED_MEANS},
        mcnemar_p=test.p_value, mcnemar_b=test.b, mcnemar_c=test.c,
        gap_ci95=list(bootstrap_gap_ci(list(pairs.values()), resamples, level, seed)),
        ci_level=level,
        curve=Curve(fractions=FRACTIONS.tolist(),
                    target=np.mean([d.curve.target for d in details], axis=0).tolist(),
                    reference=np.mean([d.curve.reference for d in details], axis=0).tolist()),
        directions=per_direction,
    )


def _fields_of(summary: PooledSummary) -> dict:
    return {f.name: getattr(summary, f.name) for f in dataclasses.fields(PooledSummary)}


def per_class(rows: dict[str, np.ndarray], class_names: np.ndarray) -> list[ClassRow]:
    """Pooled accuracies and partition per foreground class (mean over the two directions)."""
    out = []
    for label, name in enumerate(class_names):
        subset = _select(rows, rows["label"] == label)
        if not len(subset["label"]):
            continue
        directions = [_select(subset, subset["direction"] == d) for d in dict.fromkeys(subset["direction"].tolist())]
        shares = [partition_shares(*_correctness(d)) for d in directions]
        out.append(ClassRow(
            label=label, class_=str(name), n_attacked=int(len(subset["label"])),
            **{key.replace("_correct", "_acc"): float(np.mean([d[key].mean() for d in directions]))
               for key in ("target_correct", "reference_correct")},
            **{part: float(np.mean([s[part] for s in shares])) for part in PARTS},
        ))
    return out


def _group_summary(rows: dict[str, np.ndarray]) -> CanaryGroup:
    """Plain means over the rows of one group (no pooling over directions)."""
    n = len(rows["id"])
    nan = float("nan")
    t_ok, r_ok = _correctness(rows)
    out = {
        "n": int(n),
        "target_acc": float(t_ok.mean()) if n else nan,
        "reference_acc": float(r_ok.mean()) if n else nan,
        "memorized": partition_shares(t_ok, r_ok)["memorized"] if n else nan,
        "mean_dejavu_score": float(rows["dejavu_score"].mean()) if n else nan,
    }
    return CanaryGroup(**out, gap=out["target_acc"] - out["reference_acc"])


CANARY_GROUPS = ("canaries", "ordinary", "control")


def canary_summary(tables: dict[str, dict[str, np.ndarray]], canaries: np.ndarray, repeats: int,
                   metrics_config, seed: int) -> Canaries:
    """``metrics.json["canaries"]``: the self-check of ``split.canaries``. Direction A's attacked crops split
    into ``canaries`` (planted: model A saw them ``repeats`` times per epoch) and ``ordinary`` A images, and the
    ``control`` crops (T1 and T2, each in its own direction): per group ``n``, ``target_acc``,
    ``reference_acc``, ``gap``, ``memorized`` (share), ``mean_dejavu_score``; and ``roc``:
    ``canaries_vs_T`` and ``ordinary_vs_T``, :func:`roc_summary` of the déjà vu score against the control's."""
    attack = tables["attack"]
    a = _select(attack, attack["direction"] == "A")
    planted = np.isin(a["id"].astype(str), np.asarray(canaries).astype(str))
    groups = {"canaries": _select(a, planted), "ordinary": _select(a, ~planted), "control": tables["control"]}
    control_scores = tables["control"]["dejavu_score"]
    roc = {
        f"{name}_vs_T": _roc(roc_summary(groups[name]["dejavu_score"], control_scores, fprs=(0.01,),
                                         bootstrap=metrics_config.bootstrap, level=metrics_config.ci_level, seed=seed))
        for name in ("canaries", "ordinary")
    }
    summaries = {name: _group_summary(rows) for name, rows in groups.items()}
    # The one-model test's statistic for each group (T's gap is not zero there: the classifier and the
    # kNN vote differ on any crop); in the two-model test T's gap is near zero and this is the gap's test.
    columns = ("target_correct", "reference_correct")
    control = {key: np.asarray(groups["control"][key], np.float64) for key in columns}
    for name in ("canaries", "ordinary"):
        e = excess_test({key: np.asarray(groups[name][key], np.float64) for key in columns}, control, _gap,
                        metrics_config.bootstrap, metrics_config.ci_level, seed)
        summaries[name].excess_over_T = ExcessGap(value=e.value, ci95=list(e.ci), p_value=e.p_value)
    return Canaries(ids=int(len(canaries)), repeats=int(repeats), **summaries, roc=CanaryRoc(**roc))


def _roc(summary: dict) -> Roc:
    """:func:`roc_summary`'s dict as the schema's :class:`Roc` (keys checked)."""
    return from_json(Roc, summary, "roc_summary")


def summarise(tables: dict[str, dict[str, np.ndarray]], metrics_config, seed: int, class_names: np.ndarray | None = None,
              canaries: np.ndarray | None = None, canary_repeats: int = 1, split_sizes: dict[str, int] | None = None,
              crops_skipped: dict[str, int] | None = None, classifier: dict | None = None,
              tests: dict[str, Any] | None = None) -> dict:
    """``metrics.json`` (:class:`dejavu.metrics.schema.MetricsFile` as JSON): pooled attack metrics at the top
    level, ``control`` with the same keys, and ``roc``: :func:`dejavu.metrics.roc.roc_summary` of the
    per-example ``dejavu_score``, attacked crops (members) against control crops (non-members). With
    ``canaries`` (ids, non-empty): ``canaries``, :func:`canary_summary`. ``split_sizes`` and ``crops_skipped``
    (the metrics stage's) last; left out when None. With ``classifier`` (``classifier.json`` of the
    correlation stage) the tables are :func:`one_model_tables`' and ``one_model`` is
    :func:`one_model_summary`, which its outcome then rests on. ``tests``: the other parts the outcomes read
    (``sanity``, ``reconstruction``, ``vlm``: metrics.json's), added before every test's outcome is decided
    (:func:`dejavu.metrics.outcomes.decide_outcomes`, at ``metrics_config.clear_margin``)."""
    attack = pooled_summary(tables["attack"], metrics_config, seed)
    pooled_control = pooled_summary(tables["control"], metrics_config, seed)
    halves = [d.n_attacked for d in pooled_control.directions.values()]
    # The one-model control is all of T in one direction (there is no second model to swap in).
    conclusive = (sum(halves) >= 2 * MIN_CONTROL_HALF) if classifier is not None else control_conclusive(halves)
    control = ControlSummary(**_fields_of(pooled_control), conclusive=conclusive,
                             indistinguishable_from_zero=bool(conclusive and pooled_control.mcnemar_p > 0.05))
    # Membership-inference view: the per-example score of attacked crops (members: trained on by their
    # target) against control crops (non-members: trained on by neither model), each scored in its own
    # direction.
    roc = _roc(roc_summary(
        tables["attack"]["dejavu_score"], tables["control"]["dejavu_score"],
        bootstrap=metrics_config.bootstrap, level=metrics_config.ci_level, seed=seed,
    ))
    one_model = one_model_summary(tables, classifier, metrics_config, seed) if classifier is not None else None
    metrics = MetricsFile(
        schema_version=SCHEMA_VERSION, outcomes={}, alpha=metrics_config.alpha, **_fields_of(attack), control=control,
        roc=roc,
        per_class=per_class(tables["attack"], class_names) if class_names is not None else None,
        canaries=canary_summary(tables, canaries, canary_repeats, metrics_config, seed)
        if canaries is not None and len(canaries) else None,
        one_model=one_model, split_sizes=split_sizes, crops_skipped=crops_skipped,
    )
    payload = to_json(metrics)
    payload.update({key: value for key, value in (tests or {}).items() if value is not None})
    payload["outcomes"] = {name: to_json(outcome) for name, outcome in
                           decide_outcomes(payload, metrics_config.clear_margin).items()}
    return {json_key(f): payload[json_key(f)] for f in dataclasses.fields(MetricsFile) if json_key(f) in payload}


def _gap(rows: dict[str, np.ndarray]) -> float:
    return float(np.mean(rows["target_correct"]) - np.mean(rows["reference_correct"]))


def _gap_top20(rows: dict[str, np.ndarray]) -> float:
    return (accuracy_at(rows["target_correct"], rows["target_confidence"], 0.20)
            - accuracy_at(rows["reference_correct"], rows["reference_confidence"], 0.20))


def one_model_summary(tables: dict[str, dict[str, np.ndarray]], classifier: dict, metrics_config,
                      seed: int) -> OneModel:
    """``metrics.json["one_model"]``. The gap of the target's kNN vote over the classifier on A's crops mixes
    two things: memorization, and how a kNN vote on self-supervised embeddings compares with a supervised
    classifier on any crop of this data. T, which neither saw, measures the second alone, so the excess
    gap (A's minus T's, :func:`dejavu.metrics.stats.excess_test`; also among the 20 % most confident) is
    what memorization adds."""
    columns = ("target_correct", "reference_correct", "target_confidence", "reference_confidence")
    a, t = ({key: np.asarray(tables[name][key], np.float64) for key in columns} for name in ("attack", "control"))
    level, n = metrics_config.ci_level, metrics_config.bootstrap
    excess = {name: excess_test(a, t, statistic, n, level, seed)
              for name, statistic in (("all", _gap), ("top20", _gap_top20))}
    cal = classifier["calibration"]
    return OneModel(
        reference="correlation classifier",
        **{key: ExcessGap(value=e.value, ci95=list(e.ci), p_value=e.p_value)
           for key, e in (("excess_gap", excess["all"]), ("excess_gap_top20", excess["top20"]))},
        permutations=int(n),
        calibration_T=from_json(Calibration, cal["T"], "classifier.json", "calibration.T"),
        calibration_validation=from_json(Calibration, cal["validation"], "classifier.json", "calibration.validation")
        if cal.get("validation") else None,
        temperature=float(classifier["temperature"]), trained_on={k: int(v) for k, v in classifier["trained_on"].items()},
    )


def _correctness(rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """float (N,) target and reference top-1 correctness of a table's rows, in [0, 1]."""
    return (np.asarray(rows["target_correct"], dtype=np.float64),
            np.asarray(rows["reference_correct"], dtype=np.float64))


def _select(rows: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[mask] for key, value in rows.items()}
