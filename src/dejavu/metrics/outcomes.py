"""Outcomes: what each test of a run concluded, decided here and nowhere else, as data and in words.

Every test (the two-model image test of Meehan et al., "Do SSL Models Have Déjà Vu?", NeurIPS 2023; the
one-model test of Kokhlikyan et al., NeurIPS 2024; the reconstruction test; the vision-language test of
Jayaraman et al. 2024) ends in an :class:`Outcome`: the statistic that decides (its estimate, its interval
and the interval's level, its p-value), the significance level α, one of four decisions and the reasons.
``metrics.json["outcomes"]``, the console, the report, the exit code, ``dejavu.Result`` and the sweep read
it; nothing reads its sentence to find the decision.

The rule (one for all four tests), for a statistic whose positive values mean déjà vu:

- ``detected``: p < α and the estimate is positive;
- ``not_detected``: p ≥ α and the whole interval lies within ± ``margin`` of zero (``metrics.clear_margin``,
  5 points by default): the data rule out déjà vu of that size. This is the only clearance;
- ``inconclusive``: p ≥ α but the interval excludes zero (weak evidence), or is too wide to rule out the
  margin; or p < α with a negative estimate (the reference reveals more than the target: the models differ
  for a reason that memorization does not explain);
- ``no_verdict``: the numbers cannot be read at all: a sanity gate failed (a diverged, collapsed or useless
  model, data of one class), the negative control is too small or shows a gap of its own (p < 0.05 on
  images neither model trained on), nothing was attacked, or a number is not finite.

A test with two deciding statistics (the vision-language test's PPG and PRG) is detected only when both
are (an intersection-union test, whose p is the larger of the two); its headline statistic is the one with
the larger p.

The functions take ``metrics.json``'s payload (a dict), so that the metrics stage and the upgrade of a file
written before outcomes existed decide by the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from dejavu.config.schema import MetricsConfig
from dejavu.metrics.pvalue import format_p

Decision = Literal["detected", "not_detected", "inconclusive", "no_verdict"]
DECISIONS: tuple[str, ...] = ("detected", "not_detected", "inconclusive", "no_verdict")
TESTS: tuple[str, ...] = ("image", "one_model", "vlm", "reconstruction")
TITLES = {"image": "image test, two models", "one_model": "one-model test", "vlm": "vision-language test",
          "reconstruction": "reconstruction test"}
# The first words of a sentence, by decision: none of the last three can be read as "memorization found",
# and only ``not_detected`` as a clearance.
HEADS = {"detected": "Déjà vu memorization detected", "not_detected": "No déjà vu memorization detected",
         "inconclusive": "Inconclusive", "no_verdict": "No verdict"}
# A negative control passes at the conventional 5 % level, stricter than α on purpose: a spurious gap on
# images neither model trained on should not slip through easily.
CONTROL_LEVEL = 0.05
# Below this many crops per half of T, "no gap on the control" would be no evidence at all.
MIN_CONTROL_HALF = 10
DEFAULT_MARGIN = MetricsConfig.clear_margin  # for files written before the key existed


def control_conclusive(halves: list[int]) -> bool:
    """Whether the control's halves are two and each holds :data:`MIN_CONTROL_HALF` crops."""
    return len(halves) == 2 and min(halves) >= MIN_CONTROL_HALF


@dataclass(kw_only=True)
class Reason:
    """Why an outcome is what it is: a stable ``code`` for programs and a ``text`` for people."""

    code: str
    text: str


@dataclass(kw_only=True)
class Statistic:
    """One deciding number: ``estimate`` with its ``interval`` at ``level`` and a two-sided ``p`` of ``method``;
    ``unit`` "points" (a difference of shares, shown x100) or "share" (shown as a signed fraction)."""

    statistic: str
    label: str
    unit: str
    estimate: float
    interval: list[float]
    level: float
    p: float
    method: str


@dataclass(kw_only=True)
class Outcome(Statistic):
    """A test's conclusion: the deciding statistic's fields (for two statistics, the one with the larger p),
    ``alpha``, ``margin`` (how tight around zero an interval must be to clear), the ``decision``, its
    ``reasons``, every deciding statistic in ``parts``, and ``sentence``, the decision in words."""

    test: str
    title: str
    alpha: float
    margin: float
    decision: str
    reasons: list[Reason]
    parts: list[Statistic]
    sentence: str


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def shown(value: float, unit: str) -> str:
    """A deciding number as the sentences write it.

    Example:
        >>> shown(0.0875, "points"), shown(-0.1234, "share")
        ('+8.8 points', '-0.123')
    """
    return f"{100 * value:+.1f} points" if unit == "points" else f"{value:+.3f}"


def shown_interval(bounds: Sequence[float], unit: str) -> str:
    """Example:
        >>> shown_interval([0.022, 0.155], "points")
        '+2.2 to +15.5 points'
    """
    low, high = bounds
    return (f"{100 * low:+.1f} to {100 * high:+.1f} points" if unit == "points" else f"{low:+.3f} to {high:+.3f}")


def _margin(margin: float, unit: str) -> str:
    return f"±{100 * margin:g} points" if unit == "points" else f"±{margin:g}"


def _ci(stat: Statistic) -> str:
    return f"{100 * stat.level:g} % CI {shown_interval(stat.interval, stat.unit)}"


def judge(stat: Statistic, alpha: float, margin: float) -> tuple[str, Reason | None]:
    """One statistic's decision by the rule of this module, and the reason when it is not a plain one.

    Example:
        >>> weak = Statistic(statistic="gap", label="gap", unit="points", estimate=0.088, interval=[0.022, 0.155],
        ...                  level=0.95, p=0.0137, method="exact McNemar")
        >>> decision, reason = judge(weak, 0.01, 0.05); decision, reason.code
        ('inconclusive', 'weak_evidence')
    """
    if not _finite(stat.estimate, stat.p, *stat.interval):
        return "no_verdict", Reason(code="not_finite", text=(
            f"the {stat.label} is not a finite number (estimate {stat.estimate}, p {stat.p}, interval "
            f"{stat.interval}): there is nothing to judge"))
    low, high = stat.interval
    p = f"{stat.method} p = {format_p(stat.p)}"
    if stat.p < alpha:
        if stat.estimate > 0:
            return "detected", None
        return "inconclusive", Reason(code="reversed", text=(
            f"the {stat.label} is {shown(stat.estimate, stat.unit)} ({_ci(stat)}, {p} < α = {alpha:g}): the "
            "reference reveals more than the target, which memorization does not explain; the two sides differ for "
            "another reason"))
    if low > 0:
        return "inconclusive", Reason(code="weak_evidence", text=(
            f"not significant at α = {alpha:g} ({p}), but the {_ci(stat)} of the {stat.label} excludes zero: weak "
            "evidence of déjà vu; more crops or seeds would settle it"))
    if -margin <= low and high <= margin:
        return "not_detected", None
    return "inconclusive", Reason(code="wide_interval", text=(
        f"not significant at α = {alpha:g} ({p}), but the {_ci(stat)} of the {stat.label} is too wide to rule out "
        f"déjà vu of {_margin(margin, stat.unit)} (metrics.clear_margin); more crops or seeds would settle it"))


def decide(test: str, parts: Sequence[Statistic], alpha: float, margin: float, blocking: Sequence[Reason] = (),
           context: str = "") -> Outcome:
    """The outcome of ``test`` from its deciding statistics ``parts`` (all must be detected to detect), with
    ``blocking`` reasons (each makes it ``no_verdict``) and ``context``, the numbers a reader wants after the
    decision (left out of a ``no_verdict`` sentence: those numbers are not evidence)."""
    judged = [judge(stat, alpha, margin) for stat in parts]
    decisions = [decision for decision, _ in judged]
    reasons = list(blocking)
    if reasons or "no_verdict" in decisions:
        decision = "no_verdict"
        reasons += [reason for d, reason in judged if d == "no_verdict" and reason]
    elif all(d == "detected" for d in decisions):
        decision = "detected"
    elif all(d == "not_detected" for d in decisions):
        decision = "not_detected"
    else:
        decision = "inconclusive"
        reasons += [_labelled(stat, reason, len(parts)) for stat, (d, reason) in zip(parts, judged) if reason]
    headline = max(parts, key=lambda stat: stat.p if _finite(stat.p) else math.inf)
    return Outcome(**vars(headline), test=test, title=TITLES[test], alpha=alpha, margin=margin, decision=decision,
                   reasons=reasons, parts=list(parts),
                   sentence=_sentence(test, decision, parts, reasons, alpha, margin, context))


def _labelled(stat: Statistic, reason: Reason, count: int) -> Reason:
    """With several statistics each reason names its own (``PRG: not significant ...``)."""
    return Reason(code=reason.code, text=f"{stat.label}: {reason.text}" if count > 1 else reason.text)


def _sentence(test: str, decision: str, parts: Sequence[Statistic], reasons: Sequence[Reason], alpha: float,
              margin: float, context: str) -> str:
    """The decision in words, by one rule: the head (:data:`HEADS`) and the test, then what decides it with its
    labelled interval and p (or the reasons), then the context."""
    if decision == "detected":
        finding = " and ".join(f"{s.label} {shown(s.estimate, s.unit)} ({_ci(s)}, {s.method} p = {format_p(s.p)})"
                               for s in parts) + f", below α = {alpha:g}"
    elif decision == "not_detected":
        finding = " and ".join(f"{s.label} {shown(s.estimate, s.unit)} ({_ci(s)}, {s.method} p = {format_p(s.p)})"
                               for s in parts) + f": within {_margin(margin, parts[0].unit)} of zero"
    else:
        finding = "; ".join(reason.text for reason in reasons)
    tail = f"; {context}" if context and decision != "no_verdict" else ""
    return f"{HEADS[decision]} ({TITLES[test]}): {finding}{tail}."


# The four tests, from metrics.json's payload -----------------------------------------------------------
def _points(name: str, label: str, estimate: Any, interval: Sequence[Any], level: float, p: Any,
            method: str) -> Statistic:
    return Statistic(statistic=name, label=label, unit="points", estimate=float(estimate),
                     interval=[float(interval[0]), float(interval[1])], level=float(level), p=float(p), method=method)


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %" if _finite(value) else "n/a"


def sanity_reasons(sanity: Mapping[str, Any] | None) -> list[Reason]:
    """One ``sanity_failed`` reason per failed gate of ``metrics.json["sanity"]`` (none when it passed or
    predates the gates)."""
    if not sanity or sanity.get("passed", True):
        return []
    failures = list(sanity.get("failures") or []) or ["a sanity gate failed"]
    return [Reason(code="sanity_failed", text=f"a sanity check failed, so the numbers are not evidence either way: "
                                              f"{failure}") for failure in failures]


def _control_reasons(control: Mapping[str, Any], what: str) -> list[Reason]:
    """The two-model tests' negative control on T: big enough, and no gap of its own."""
    halves = [d.get("n_attacked", 0) for d in (control.get("directions") or {}).values()]
    if not control.get("conclusive", len(halves) == 2 and min(halves, default=0) >= MIN_CONTROL_HALF):
        return [Reason(code="control_too_small", text=(
            f"only {control.get('n_attacked', sum(halves))} held-out crops for the negative control (at least "
            f"{2 * MIN_CONTROL_HALF} needed, {MIN_CONTROL_HALF} a half), so the test's calibration is unchecked; "
            "a larger T (split.t_per_class) would settle it"))]
    p = float(control["mcnemar_p"])
    if not p > CONTROL_LEVEL:
        return [Reason(code="control_not_clean", text=(
            f"on held-out T, which neither model trained on, {what} also differ ({shown(float(control['gap']), 'points')}, "
            f"p = {format_p(p)} < {CONTROL_LEVEL:g}), so the test sees a gap where there is no memorization and "
            "the gap on A and B cannot be read as déjà vu"))]
    return []


def image_outcome(metrics: Mapping[str, Any], alpha: float, margin: float) -> Outcome:
    """The two-model image test: the pooled gap (target minus reference top-1 accuracy on the periphery crops
    of A and B), exact McNemar p, bootstrap interval; the control T must be large enough and show no gap."""
    stat = _points("gap", "gap (target − reference)", metrics["gap"], metrics["gap_ci95"], metrics["ci_level"],
                   metrics["mcnemar_p"], "exact McNemar")
    control = metrics["control"]
    blocking = sanity_reasons(metrics.get("sanity"))
    if not metrics["n_attacked"]:
        blocking.append(Reason(code="no_crops", text="no crop was attacked (no image of A or B has a valid periphery "
                                                     "crop)"))
    blocking += _control_reasons(control, "the models' crops")
    context = (f"from background-only crops of their own training images the target infers the object's label in "
               f"{_pct(metrics['target_acc'])}, the reference in {_pct(metrics['reference_acc'])} "
               f"({metrics['n_attacked']} crops); on held-out T the gap is "
               f"{shown(float(control['gap']), 'points')} (p = {format_p(float(control['mcnemar_p']))}), near zero as "
               "it should be")
    return decide("image", [stat], alpha, margin, blocking, context)


def one_model_outcome(metrics: Mapping[str, Any], alpha: float, margin: float) -> Outcome:
    """The one-model test: the excess gap (the target's kNN vote over the correlation classifier on A's crops,
    minus the same on T's), permutation p, bootstrap interval. T's own gap is expected: it is the baseline."""
    one, control = metrics["one_model"], metrics["control"]
    e = one["excess_gap"]
    stat = _points("excess_gap", "excess gap (A's gap − T's)", e["value"], e["ci95"], metrics["ci_level"],
                   e["p_value"], "permutation")
    blocking = sanity_reasons(metrics.get("sanity"))
    if not metrics["n_attacked"]:
        blocking.append(Reason(code="no_crops", text="no crop of A was attacked"))
    if not control.get("conclusive", True):
        blocking.append(Reason(code="control_too_small", text=(
            f"only {control['n_attacked']} held-out crops (at least {2 * MIN_CONTROL_HALF} needed) to measure the "
            "classifier against the target where neither trained; a larger T (split.t_per_class) would settle it")))
    cal = one["calibration_T"]
    context = (f"on A's crops the target's kNN vote beats the correlation classifier by "
               f"{shown(float(metrics['gap']), 'points')} ({_pct(metrics['target_acc'])} vs "
               f"{_pct(metrics['reference_acc'])}), on held-out T by {shown(float(control['gap']), 'points')} "
               f"({_pct(control['target_acc'])} vs {_pct(control['reference_acc'])}); the classifier, never trained "
               f"on A or T, is {_pct(cal['accuracy'])} accurate on T at a mean confidence of "
               f"{_pct(cal['mean_confidence'])} (ECE {cal['ece']:.3f})")
    return decide("one_model", [stat], alpha, margin, blocking, context)


def reconstruction_outcome(metrics: Mapping[str, Any], alpha: float, margin: float) -> Outcome:
    """The reconstruction test: the share of samples the judge labels with the true class, target's decoder
    minus the reference's (pooled over A and B), exact McNemar p, bootstrap interval; T must show no gap."""
    test = metrics["reconstruction"]
    stat = _points("reconstruction_gap", "gap in samples showing the true object (target − reference)",
                   test["gap"], test["gap_ci95"], metrics["ci_level"], test["mcnemar_p"], "exact McNemar")
    blocking = sanity_reasons(metrics.get("sanity"))
    if not test["n"]:
        blocking.append(Reason(code="no_crops", text="no crop was reconstructed"))
    control = test["control"]
    held = "T was not reconstructed"
    if control["n"]:
        held = (f"on held-out T the gap is {shown(float(control['gap']), 'points')} (p = "
                f"{format_p(float(control['mcnemar_p']))})")
        if not float(control["mcnemar_p"]) > CONTROL_LEVEL:
            blocking.append(Reason(code="control_not_clean", text=(
                f"{held} < {CONTROL_LEVEL:g}, on images neither model trained on: the decoders differ for another "
                "reason than memory, so the gap on A and B cannot be read as déjà vu")))
    context = (f"the target's reconstructions show the true object in {_pct(test['target_acc'])} of samples, the "
               f"reference's in {_pct(test['reference_acc'])} ({test['n']} crops); {held}")
    return decide("reconstruction", [stat], alpha, margin, blocking, context)


def vlm_outcome(metrics: Mapping[str, Any], alpha: float, margin: float) -> Outcome:
    """The vision-language test: PPG and PRG (shares of training records whose retrieved public images reveal
    more of their objects with the target than with the reference, minus fewer), each by a sign test with a
    bootstrap interval; with a text-only reference the gaps beyond the control's (Mann-Whitney p). Both must
    be detected. The models must match T's captions with their images above chance (``vlm.failures``)."""
    vlm = metrics["vlm"]
    excess = vlm.get("excess")
    source = excess or vlm
    parts = [Statistic(statistic=f"excess_{name}" if excess else name,
                       label=f"{name.upper()} beyond the control's" if excess else name.upper(), unit="share",
                       estimate=float(source[name]), interval=[float(v) for v in source[f"{name}_ci"]],
                       level=float(metrics["ci_level"]), p=float(source[f"{name}_p"]),
                       method="Mann-Whitney" if excess else "sign test")
             for name in ("ppg", "prg")]
    blocking = sanity_reasons(metrics.get("sanity"))
    blocking += [Reason(code="retrieval_at_chance", text=text) for text in vlm.get("failures") or []]
    if not vlm["n"]:
        blocking.append(Reason(code="no_records", text="no training caption was scored"))
    control = vlm["control"]
    if not excess and control["n"]:
        noisy = [f"{name.upper()} {shown(float(control[name]), 'share')} (p = {format_p(float(control[f'{name}_p']))})"
                 for name in ("ppg", "prg") if not float(control[f"{name}_p"]) > CONTROL_LEVEL]
        if noisy:
            blocking.append(Reason(code="control_not_clean", text=(
                f"on held-out T's captions, which neither model trained on, the models also differ ({', '.join(noisy)} "
                f"< {CONTROL_LEVEL:g}), so the gaps on A and B cannot be read as déjà vu")))
    what = " (text-only reference: the gaps beyond the control's decide)" if excess else ""
    context = (f"over {vlm['n']} training captions{what}, pooled PPG {shown(float(vlm['ppg']), 'share')}, PRG "
               f"{shown(float(vlm['prg']), 'share')}; on held-out T PPG {shown(float(control['ppg']), 'share')}, PRG "
               f"{shown(float(control['prg']), 'share')}")
    return decide("vlm", parts, alpha, margin, blocking, context)


def decide_outcomes(metrics: Mapping[str, Any], margin: float = DEFAULT_MARGIN) -> dict[str, Outcome]:
    """Every test's outcome from ``metrics.json``'s payload (``alpha`` its own), in the order the run states
    them: a CLIP run's vision-language test first, then the image test (two-model or one-model), then the
    reconstruction test. The first is the run's headline and sets the exit code."""
    alpha = float(metrics["alpha"])
    image = (one_model_outcome if metrics.get("one_model") else image_outcome)(metrics, alpha, margin)
    out: dict[str, Outcome] = {}
    if metrics.get("vlm"):
        out["vlm"] = vlm_outcome(metrics, alpha, margin)
    out[image.test] = image
    if metrics.get("reconstruction"):
        out["reconstruction"] = reconstruction_outcome(metrics, alpha, margin)
    return out


# The command line's exit code of a finished run, by its headline outcome's decision.
EXIT_CODES = {"detected": 0, "not_detected": 0, "no_verdict": 3, "inconclusive": 4}


def exit_code(outcomes: Mapping[str, Any]) -> int:
    """0 when the headline test (the first outcome) reached a verdict either way, 3 for no verdict, 4 for an
    inconclusive result. ``outcomes``: :class:`Outcome` objects by test, in their order."""
    first = next(iter(outcomes.values()))
    return EXIT_CODES[first.decision]


def count_detected(decisions: Sequence[str]) -> int:
    return sum(1 for decision in decisions if decision == "detected")


def seeds_verdict(decisions: Sequence[str]) -> tuple[int, str]:
    """A sweep point's verdict from its seeds' decisions: how many detected, and the words.

    Examples:
        >>> seeds_verdict(["detected", "detected", "inconclusive"])
        (2, 'detected in 2 of 3 seeds: not robust')
        >>> seeds_verdict(["not_detected", "inconclusive"])
        (0, 'inconclusive in 1 of 2 seeds, detected in none')
    """
    n = len(decisions)
    detected = count_detected(decisions)
    missing = sum(1 for d in decisions if d == "no_verdict")
    unsure = sum(1 for d in decisions if d == "inconclusive")
    plural = "s" if n > 1 else ""
    if missing:
        return detected, f"no verdict in {missing} of {n} seed{plural}"
    if n == 1:
        return detected, decisions[0].replace("_", " ")
    if detected == n:
        return detected, f"detected in every seed ({n}/{n})"
    if detected:
        return detected, f"detected in {detected} of {n} seeds: not robust"
    if unsure:
        return 0, f"inconclusive in {unsure} of {n} seeds, detected in none"
    return 0, f"not detected in any of {n} seeds"
