"""Outcomes (dejavu.metrics.outcomes): one rule decides every test, as data, and every place that speaks of a
result (console, report, exit code, Result, sweep) reads the decision, never a sentence.

The weak-evidence case of issue 32 is built from exact McNemar counts through the real statistics
(summarise: McNemar, bootstrap), then shown through the real console, report and Result of a tiny run."""

from __future__ import annotations

import ast
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from dejavu.api import result_of
from dejavu.cli import _print_summary
from dejavu.config import load_config
from dejavu.metrics.outcomes import (
    DECISIONS, HEADS, Statistic, decide, decide_outcomes, exit_code, image_outcome, judge, one_model_outcome, seeds_verdict,
)
from dejavu.metrics.schema import POOLED_MEANS, metrics_from_json, read_metrics, to_json
from dejavu.metrics.tables import summarise
from dejavu.report.html import write_report
from dejavu.runs import Run, write_json
from dejavu.stages import run_all
from tests.conftest import TINY

SRC = Path(__file__).resolve().parents[1] / "src" / "dejavu"
CLEARANCE = HEADS["not_detected"]


def _stat(estimate: float, low: float, high: float, p: float) -> Statistic:
    return Statistic(statistic="gap", label="gap", unit="points", estimate=estimate, interval=[low, high],
                     level=0.95, p=p, method="exact McNemar")


@pytest.mark.parametrize("estimate, low, high, p, decision, code", [
    (0.10, 0.05, 0.15, 1e-4, "detected", None),
    (0.088, 0.022, 0.155, 0.0137, "inconclusive", "weak_evidence"),  # the audit: p > α, CI excludes 0
    (0.01, -0.03, 0.04, 0.6, "not_detected", None),                   # tight around zero: a clearance
    (0.01, -0.03, 0.051, 0.6, "inconclusive", "wide_interval"),        # just too wide to clear at 5 points
    (0.059, -0.035, 0.147, 0.25, "inconclusive", "wide_interval"),     # the one-model excess
    (-0.10, -0.15, -0.05, 1e-4, "inconclusive", "reversed"),           # the reference reveals more
    (float("nan"), float("nan"), float("nan"), float("nan"), "no_verdict", "not_finite"),
])
def test_the_rule_decides_each_case(estimate, low, high, p, decision, code):
    found, reason = judge(_stat(estimate, low, high, p), alpha=0.01, margin=0.05)
    assert found == decision and (reason.code if reason else None) == code


def test_only_a_tight_interval_is_worded_as_a_clearance_and_blocking_reasons_win():
    for stat in (_stat(0.088, 0.022, 0.155, 0.0137), _stat(0.0, -0.06, 0.06, 1.0)):
        outcome = decide("image", [stat], 0.01, 0.05)
        assert not outcome.sentence.startswith(CLEARANCE) and outcome.sentence.startswith("Inconclusive")
    clear = decide("image", [_stat(0.0, -0.02, 0.02, 1.0)], 0.01, 0.05, context="numbers")
    assert clear.sentence.startswith(CLEARANCE) and "within ±5 points of zero" in clear.sentence
    from dejavu.metrics.outcomes import Reason
    blocked = decide("image", [_stat(0.10, 0.05, 0.15, 1e-4)], 0.01, 0.05,
                     [Reason(code="sanity_failed", text="model A collapsed")], context="numbers")
    assert blocked.decision == "no_verdict" and blocked.sentence == "No verdict (image test, two models): model A collapsed."


def _rows(direction: str, n: int, b: int, c: int, both: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` attack rows of one direction: ``b`` memorized (target right only), ``c`` misrepresented, ``both``
    correlated, the rest unassociated; confidences random (they only order the subsets)."""
    target = np.array([1.0] * b + [0.0] * c + [1.0] * both + [0.0] * (n - b - c - both))
    reference = np.array([0.0] * b + [1.0] * c + [1.0] * both + [0.0] * (n - b - c - both))
    rng = np.random.default_rng(seed)
    return {"id": np.array([f"{direction}{i}" for i in range(n)]), "direction": np.full(n, direction),
            "label": np.zeros(n, int), "target_correct": target, "reference_correct": reference,
            "target_top5_correct": target, "reference_top5_correct": reference,
            "target_confidence": rng.random(n), "reference_confidence": rng.random(n),
            "dejavu_score": target - reference}


def _concat(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


@pytest.fixture(scope="module")
def weak() -> dict:
    """metrics.json of a two-model audit with 30 memorized and 14 misrepresented crops of 400: exact McNemar p
    between α = 0.01 and 0.05, and a 95 % bootstrap interval above zero."""
    tables = {"attack": _concat(_rows("A", 200, 15, 7, 40, 0), _rows("B", 200, 15, 7, 40, 1)),
              "control": _concat(_rows("T1", 60, 5, 5, 10, 2), _rows("T2", 60, 5, 5, 10, 3))}
    config = load_config(None, ["metrics.bootstrap=2000"]).metrics
    return summarise(tables, config, seed=0)


def test_a_weak_two_model_result_is_inconclusive_never_a_clearance(weak):
    p = binomtest(30, 44, 0.5).pvalue
    assert weak["mcnemar_b"] == 30 and weak["mcnemar_c"] == 14 and weak["mcnemar_p"] == pytest.approx(p)
    assert 0.01 < p < 0.05 and weak["gap"] == pytest.approx(16 / 400) and weak["gap_ci95"][0] > 0
    outcome = weak["outcomes"]["image"]
    assert (outcome["decision"], [r["code"] for r in outcome["reasons"]]) == ("inconclusive", ["weak_evidence"])
    assert (outcome["statistic"], outcome["estimate"], outcome["p"]) == ("gap", weak["gap"], weak["mcnemar_p"])
    assert outcome["interval"] == weak["gap_ci95"] and (outcome["level"], outcome["alpha"]) == (0.95, 0.01)
    assert outcome["sentence"].startswith("Inconclusive (image test, two models): not significant at α = 0.01")
    assert "weak evidence" in outcome["sentence"] and "95 % CI +" in outcome["sentence"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Run:
    run = Run(tmp_path_factory.mktemp("outcomes") / "run", load_config(None, [*TINY, "train.epochs=1", "threads=1"]))
    run.claim()
    run_all(run, log=lambda _: None)
    return run


def _with_numbers_of(run: Run, case: dict) -> dict:
    """The run's metrics.json with the attack's and the control's numbers of ``case``, outcomes decided again."""
    metrics = json.loads((run.root / "metrics.json").read_text())
    keys = [*POOLED_MEANS, "n_attacked", "mcnemar_p", "mcnemar_b", "mcnemar_c", "gap_ci95", "ci_level", "curve",
            "directions"]
    metrics.update({key: copy.deepcopy(case[key]) for key in keys})
    metrics["control"] = copy.deepcopy(case["control"])
    metrics["outcomes"] = {name: to_json(o) for name, o in decide_outcomes(metrics).items()}
    return metrics


def test_the_console_the_report_the_exit_code_and_result_all_say_inconclusive(tiny_run, weak, capsys, tmp_path):
    shutil.copytree(tiny_run.root, tmp_path / "run")
    run = Run(tmp_path / "run", tiny_run.config)
    write_json(run.root / "metrics.json", _with_numbers_of(run, weak))
    write_report(run)
    code = _print_summary(run)
    printed = capsys.readouterr().out
    assert code == 4
    assert printed.lstrip().startswith("Inconclusive (image test, two models): not significant at α = 0.01")
    assert CLEARANCE not in printed
    report = (run.root / "report.html").read_text(encoding="utf-8")
    assert 'class="verdict inconclusive"' in report and CLEARANCE not in report
    head = report[:report.index("<h2")]  # the first screen: the headline and its deciding numbers
    assert "<strong>Inconclusive</strong>" in head and "+4.0 points" in head and "weak evidence" in head
    result = result_of(run.root)
    assert result.decision == "inconclusive" and result.outcome.reasons[0].code == "weak_evidence"
    assert repr(result).startswith("Result(image: inconclusive, gap=+0.0400 [95 % CI +0.")
    assert CLEARANCE not in repr(result) and not result.verdict.startswith(CLEARANCE)


def test_result_tables_as_data(tiny_run):
    result = result_of(tiny_run.root)
    rows = result.samples(frame=False)
    control = result.samples("control", frame=False)
    assert len(rows) == result.metrics.n_attacked and len(control) == result.metrics.control.n_attacked
    assert isinstance(rows[0]["target_correct"], float) and isinstance(rows[0]["id"], str)
    # The pooled gap is the mean over directions of the rows' correctness: the table is the data behind it.
    gaps = [np.mean([r["target_correct"] - r["reference_correct"] for r in rows if r["direction"] == d]) for d in "AB"]
    assert np.mean(gaps) == pytest.approx(result.metrics.gap, abs=1e-6)


def test_an_older_file_is_upgraded_to_the_same_outcomes(tiny_run):
    current = json.loads((tiny_run.root / "metrics.json").read_text())
    old = {key: value for key, value in current.items() if key != "outcomes"}
    old.update(schema_version=2, verdict="No déjà vu memorization detected at α = 0.01: ...")
    upgraded = metrics_from_json(old)
    assert to_json(upgraded.outcomes) == current["outcomes"]
    assert exit_code(upgraded.outcomes) == exit_code(read_metrics(tiny_run.root / "metrics.json").outcomes)


def test_the_one_model_outcome_is_the_excess_gap_with_a_blocking_small_control():
    metrics = {"one_model": {"excess_gap": {"value": 0.059, "ci95": [-0.035, 0.147], "p_value": 0.25},
                             "calibration_T": {"accuracy": 0.3, "mean_confidence": 0.35, "ece": 0.05}},
               "gap": -0.17, "target_acc": 0.3, "reference_acc": 0.47, "n_attacked": 200, "ci_level": 0.95,
               "control": {"conclusive": True, "n_attacked": 200, "gap": -0.23, "target_acc": 0.2, "reference_acc": 0.43}}
    outcome = one_model_outcome(metrics, 0.01, 0.05)
    assert (outcome.statistic, outcome.estimate, outcome.p) == ("excess_gap", 0.059, 0.25)
    assert outcome.decision == "inconclusive" and outcome.sentence.startswith("Inconclusive (one-model test)")
    metrics["control"]["conclusive"] = False
    assert [r.code for r in one_model_outcome(metrics, 0.01, 0.05).reasons] == ["control_too_small"]
    # A control gap of -23 points is expected here: it does not block the one-model test.
    assert "control_not_clean" not in {r.code for r in one_model_outcome({**metrics, "control": {
        **metrics["control"], "conclusive": True, "mcnemar_p": 1e-9}}, 0.01, 0.05).reasons}


def test_a_two_model_control_that_shows_a_gap_of_its_own_gives_no_verdict(weak):
    noisy = copy.deepcopy(weak)
    noisy["control"]["mcnemar_p"] = 0.003
    outcome = image_outcome(noisy, 0.01, 0.05)
    assert outcome.decision == "no_verdict" and [r.code for r in outcome.reasons] == ["control_not_clean"]


def test_a_sweep_point_counts_its_seeds_decisions():
    assert seeds_verdict(["detected"]) == (1, "detected")
    assert seeds_verdict(["detected", "detected"]) == (2, "detected in every seed (2/2)")
    assert seeds_verdict(["not_detected", "not_detected"]) == (0, "not detected in any of 2 seeds")
    assert seeds_verdict(["not_detected", "inconclusive"])[1].startswith("inconclusive")


# No code reads a decision from prose --------------------------------------------------------------------
WORDS = ("verdict", "detected", "déjà vu", "significant", "no verdict", "inconclusive")


def prose_matches(source: str) -> list[int]:
    """Lines of ``source`` that test a string for verdict words: ``"... detected" in x``, ``x.startswith("No
    verdict")`` and the like (comparing a decision code with ``==`` is data, and allowed)."""
    found = []

    def wordy(node: ast.AST) -> bool:
        # A decision code ("no_verdict" in decisions) is data, not prose.
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value not in DECISIONS and any(
            word in node.value.lower() for word in WORDS)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if wordy(node.left):
                found.append(node.lineno)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("startswith", "endswith", "find", "index", "count", "match", "search")
                and any(wordy(arg) or (isinstance(arg, ast.Tuple) and any(map(wordy, arg.elts))) for arg in node.args)):
            found.append(node.lineno)
    return sorted(found)


def test_the_prose_scan_finds_the_patterns_it_forbids():
    old = ('code = 3 if metrics.vlm.verdict.startswith("No verdict") else 0\n'
           'detected = "Déjà vu memorization detected" in metrics["verdict"]\n'
           'ok = outcome.decision == "detected" or "no_verdict" in decisions\n')
    assert prose_matches(old) == [1, 2]


def test_no_code_branches_on_a_verdict_sentence():
    found = [f"{path.relative_to(SRC)}:{line}" for path in sorted(SRC.rglob("*.py"))
             for line in prose_matches(path.read_text(encoding="utf-8"))]
    assert not found, found
