"""The typed schema of metrics.json and evaluation.json: what runs write round-trips exactly, the report's rows
and the sweep's columns are schema fields, older files are upgraded, and unknown or missing keys are refused."""

from __future__ import annotations

import copy
import json
from dataclasses import fields

import pytest

from dejavu.errors import RunFolderError
from dejavu.metrics.schema import (
    CONVENTIONAL_PARTS, POOLED_MEANS, SCHEMA_VERSION, SUMMARY_ROWS, ControlSummary, DirectionSummary, LayerMetrics,
    MetricsFile, PooledSummary, TrainTest, evaluation_from_json, evaluation_payload, json_key, metrics_from_json,
    read_evaluation, read_metrics, to_json, upgrade_metrics,
)
from tests.conftest import TINY


def _keys(cls) -> set[str]:
    return {json_key(f) for f in fields(cls)}


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    """A tiny run with canaries (every optional part of metrics.json present), every stage, one thread."""
    import torch

    from dejavu.config import load_config
    from dejavu.runs import Run
    from dejavu.stages import run_all

    run = Run(tmp_path_factory.mktemp("schema") / "run",
              load_config(None, [*TINY, "train.epochs=1", "threads=1", "split.canaries=4", "split.canary_repeats=2"]))
    run.claim()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_all(run, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return run.root


def test_a_runs_metrics_json_round_trips_through_the_dataclasses_exactly(run_root):
    text = (run_root / "metrics.json").read_text()
    payload = json.loads(text)
    assert list(payload)[0] == "schema_version" and payload["schema_version"] == SCHEMA_VERSION
    assert "canaries" in payload and "per_class" in payload and payload["roc"] is not None
    metrics = read_metrics(run_root / "metrics.json")
    assert isinstance(metrics, MetricsFile) and isinstance(metrics.control, ControlSummary)
    assert json.dumps(to_json(metrics)) == json.dumps(payload)  # same keys, same order, same values
    assert metrics.gap == payload["gap"] and metrics.directions["A"].gap_ci95 == payload["directions"]["A"]["gap_ci95"]
    assert metrics.roc.tpr_at_fpr_0_01 == payload["roc"]["tpr_at_fpr_0.01"]
    assert metrics.canaries.roc.canaries_vs_T.tpr_at_fpr_0_001 is None  # the canaries' ROC: FPR 0.01 only


def test_evaluation_json_reads_through_the_schema(run_root):
    payload = json.loads((run_root / "evaluation.json").read_text())
    evaluation = read_evaluation(run_root / "evaluation.json")
    current = to_json(evaluation)
    assert current["schema_version"] == 2 and list(current)[0] == "schema_version"
    assert {k: v for k, v in current.items() if k != "schema_version"} == {
        k: v for k, v in payload.items() if k != "schema_version"}
    rebuilt = evaluation_payload(k=payload["k"], attack_layer=payload["attack_layer"], layers=payload["layers"],
                                 sizes=payload["sizes"], models=payload["models"], note=payload["note"])
    assert json.dumps(rebuilt) == json.dumps(current)


def test_every_key_the_report_asks_for_is_a_field_of_the_summaries():
    for row in SUMMARY_ROWS:
        for cls in (DirectionSummary, PooledSummary, ControlSummary, MetricsFile):
            assert row.key in _keys(cls), f"SUMMARY_ROWS asks for '{row.key}', which {cls.__name__} lacks"
    assert set(POOLED_MEANS) <= _keys(DirectionSummary)


def test_every_sweep_column_is_a_schema_field_and_the_columns_are_unchanged(run_root):
    from dejavu.sweep import CONVENTIONAL, DERIVED, ROW_KEYS, SUMMARY_METRICS

    assert set(ROW_KEYS) <= _keys(PooledSummary)
    assert {metric for metric, _ in CONVENTIONAL_PARTS} <= _keys(LayerMetrics)
    assert {part for _, part in CONVENTIONAL_PARTS} <= _keys(TrainTest)
    metrics = read_metrics(run_root / "metrics.json")
    assert all(isinstance(value(metrics), float) for name, value in DERIVED if name not in ("sanity", "decision"))
    assert dict(DERIVED)["sanity"](metrics) == "passed"
    assert dict(DERIVED)["decision"](metrics) == metrics.outcomes["image"].decision
    # The CSV columns as before the schema (sweep.csv after the grid values and seed; summary.csv's metrics).
    assert ROW_KEYS == ("target_acc", "reference_acc", "gap", "target_acc_top20", "reference_acc_top20",
                        "dejavu_score_top20", "memorized", "correlated", "misrepresented", "unassociated", "mcnemar_p")
    # Added with the sanity gates: whether the point's models passed them ("passed", "failed", "unchecked");
    # with the outcomes, the image test's decision (what the point's verdict counts).
    assert [name for name, _ in DERIVED] == ["gap_ci_low", "gap_ci_high", "auc", "control_gap", "control_p", "sanity",
                                             "decision"]
    conventional = [f"{layer}_{metric}_{part}" for layer in ("backbone", "attacked")
                    for metric in ("knn", "linear_probe") for part in ("train", "test", "gap")]
    assert list(CONVENTIONAL) == conventional
    assert SUMMARY_METRICS == ("gap", "target_acc", "reference_acc", "target_acc_top20", "reference_acc_top20",
                               "memorized", "correlated", "misrepresented", "unassociated", "auc", "control_gap",
                               # CLIP runs only: an image study's rows lack them, so its summary does too
                               "vlm_ppg", "vlm_prg", "vlm_recall_gap_auc", "vlm_control_ppg", "vlm_control_prg",
                               *conventional)


def test_an_old_format_file_is_upgraded(run_root):
    current = json.loads((run_root / "metrics.json").read_text())
    old = copy.deepcopy(current)
    for key in ("schema_version", "canaries", "roc"):
        del old[key]
    del old["control"]["conclusive"]  # written before the control's size check
    upgraded = upgrade_metrics(old)
    assert list(upgraded)[0] == "schema_version" and upgraded["roc"] is None
    assert list(upgraded["control"])[-2:] == ["conclusive", "indistinguishable_from_zero"]
    metrics = metrics_from_json(old)
    assert metrics.roc is None and metrics.canaries is None
    assert metrics.control.conclusive == current["control"]["conclusive"]
    expected = {k: v for k, v in current.items() if k != "canaries"}
    expected["roc"] = None
    assert json.dumps(to_json(metrics)) == json.dumps(expected)
    # An old evaluation.json: no schema_version.
    evaluation = json.loads((run_root / "evaluation.json").read_text())
    evaluation.pop("schema_version", None)
    assert evaluation_from_json(evaluation).schema_version == 2


def test_unknown_missing_and_mistyped_keys_are_refused_naming_file_and_key(run_root, tmp_path):
    current = json.loads((run_root / "metrics.json").read_text())
    for change, message in (
        (lambda p: p.update(gap_typo=0.1), "unknown key 'gap_typo'"),
        (lambda p: p["control"].update(extra=1), "unknown key 'control.extra'"),
        (lambda p: p["directions"]["B"].pop("gap"), "missing key 'directions.B.gap'"),
        (lambda p: p["roc"].pop("auc"), "missing key 'roc.auc'"),
        (lambda p: p.update(n_attacked="many"), "key 'n_attacked': expected an integer"),
        (lambda p: p.update(schema_version=99), "schema_version 99"),
    ):
        payload = copy.deepcopy(current)
        change(payload)
        path = tmp_path / "metrics.json"
        path.write_text(json.dumps(payload))
        with pytest.raises(RunFolderError, match=message) as error:
            read_metrics(path)
        assert "metrics.json" in str(error.value)
    evaluation = json.loads((run_root / "evaluation.json").read_text())
    evaluation["models"]["A"]["backbone"]["knn"]["trian"] = 0.5
    with pytest.raises(RunFolderError, match=r"unknown key 'models\.A\.backbone\.knn\.trian'"):
        evaluation_from_json(evaluation)
