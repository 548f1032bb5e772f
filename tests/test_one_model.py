"""The one-model test (`dejavu audit --target A` without `--reference`): a correlation classifier trained on
B's and X's periphery crops takes the reference's place; its tables, statistics, verdict and report."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import dejavu
from dejavu.api import execute
from dejavu.cli import main
from dejavu.config import load_config
from dejavu.errors import ConfigError
from dejavu.metrics.stats import excess_test
from dejavu.metrics.tables import direction_table, entropy_score
from dejavu.models.encoder import Encoder
from dejavu.api import result_of
from dejavu.metrics.outcomes import EXIT_CODES
from tests.conftest import FINISHED, TINY

FAST = ["correlation.epochs=4", "correlation.widths=[4,8]", "correlation.batch_size=32", "metrics.bootstrap=200"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    execute(out, load_config(None, TINY), log=lambda message: None)
    return out


@pytest.fixture(scope="module")
def audited(trained, tmp_path_factory):
    """The target of ``trained`` audited alone, through the CLI (no --reference)."""
    out = tmp_path_factory.mktemp("one") / "audit"
    code = main(["audit", "--out", str(out), "--target", str(trained / "models/A/model.safetensors"),
                 "--config", str(trained / "config.json"), *FAST])
    assert code == EXIT_CODES[json.loads((out / "metrics.json").read_text())["outcomes"]["one_model"]["decision"]]
    assert code in FINISHED
    return out


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_audit_of_a_target_alone_writes_the_one_model_numbers_and_report(trained, audited):
    metrics = json.loads((audited / "metrics.json").read_text())
    one = metrics["one_model"]
    split = json.loads((trained / "data/split.json").read_text())
    assert not (audited / "models/B").exists(), "no reference model is trained or loaded"
    rows, control = _csv(audited / "samples.csv"), _csv(audited / "control_samples.csv")
    assert {(r["direction"], r["target_model"], r["reference_model"]) for r in rows} == {("A", "A", "classifier")}
    assert {r["direction"] for r in control} == {"T"} and len(control) == metrics["control"]["n_attacked"]
    assert metrics["n_attacked"] == len(rows) == len(split["sets"]["A"])
    # The headline numbers recompute from samples.csv; the excess gap is A's gap minus T's.
    gap = np.mean([float(r["target_correct"]) - float(r["reference_correct"]) for r in rows])
    t_gap = np.mean([float(r["target_correct"]) - float(r["reference_correct"]) for r in control])
    assert metrics["gap"] == pytest.approx(gap) and metrics["control"]["gap"] == pytest.approx(t_gap)
    assert one["excess_gap"]["value"] == pytest.approx(gap - t_gap)
    low, high = one["excess_gap"]["ci95"]
    assert low <= one["excess_gap"]["value"] <= high and 0 < one["excess_gap"]["p_value"] <= 1
    # The classifier's probabilities give its column; its calibration on T is over every T crop.
    probabilities = np.load(audited / "models/classifier/probabilities_A.npz")
    by_id = dict(zip(probabilities["ids"].tolist(), probabilities["probabilities"]))
    for r in rows[:10]:
        p = by_id[r["id"]]
        assert float(r["reference_true_prob"]) == pytest.approx(p[int(r["label"])], abs=1e-6)
        assert float(r["reference_correct"]) == float(np.argmax(p) == int(r["label"]))
        entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
        assert float(r["dejavu_score"]) == pytest.approx(entropy + float(r["target_confidence"]), abs=2e-6)
    assert one["calibration_T"]["n"] == len(control)
    outcome = metrics["outcomes"]["one_model"]
    assert list(metrics["outcomes"]) == ["one_model"] and outcome["statistic"] == "excess_gap"
    assert (outcome["estimate"], outcome["interval"], outcome["p"]) == (
        one["excess_gap"]["value"], one["excess_gap"]["ci95"], one["excess_gap"]["p_value"])
    assert "(one-model test)" in outcome["sentence"] and "excess gap" in outcome["sentence"]
    report = (audited / "report.html").read_text()
    # The deciding number leads: the one-model section before the key numbers, one direction named as such.
    assert report.index('id="one-model"') < report.index('id="numbers"') and "pooled attack" not in report
    assert repr(result_of(audited)).startswith(f"Result(one_model: {outcome['decision']}, excess_gap=")
    assert "One-model test" in report and "Calibration of the classifier" in report
    assert "correlation classifier" in report and "classifier probability" in report  # the gallery's caption


def test_the_classifier_never_trains_on_an_image_of_A_or_T(trained, audited):
    split = json.loads((trained / "data/split.json").read_text())["sets"]
    trained_on = set(np.load(audited / "models/classifier/training_ids.npz")["ids"].tolist())
    assert trained_on <= set(split["B"]) | set(split["X"])
    assert not trained_on & (set(split["A"]) | set(split["T"]) | set(split.get("shared", [])))
    summary = json.loads((audited / "models/classifier/classifier.json").read_text())
    assert summary["trained_on"]["B"] + summary["trained_on"]["X"] == len(trained_on)
    assert summary["trained_on"]["B"] == len(split["B"])  # every B image of the tiny data has a crop


def test_the_same_seed_gives_the_same_numbers_and_a_rerun_is_up_to_date(trained, audited, tmp_path, capsys):
    again = tmp_path / "again"
    assert main(["audit", "--out", str(again), "--target", str(trained / "models/A/model.safetensors"),
                 "--config", str(trained / "config.json"), *FAST]) in FINISHED
    assert (again / "samples.csv").read_bytes() == (audited / "samples.csv").read_bytes()
    capsys.readouterr()
    assert main(["audit", "--out", str(audited), "--target", str(trained / "models/A/model.safetensors"), *FAST]) in FINISHED
    log = capsys.readouterr().out
    assert "[correlation] up to date" in log and "[train_B] not needed by this run" in log


def test_a_target_with_random_weights_shows_no_deja_vu(tmp_path):
    """Untrained weights saw nothing: A and T are alike to them, so the excess gap is not significant.
    (On more images than the tiny run's, where a classifier of 16-px crops can learn something.)"""
    import torch

    config = load_config(None, [*TINY, "data.images_per_class=120", "split.a_per_class=20", "split.b_per_class=20",
                                "split.x_per_class=40", "split.t_per_class=40"])
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        encoder = Encoder("convnet", [4, 8], "32-32", input_size=16)
        result = dejavu.audit(target=encoder, out=tmp_path / f"random{seed}", config=config,
                              **{"correlation.epochs": 10, "correlation.widths": [4, 8], "correlation.batch_size": 32,
                                 "metrics.bootstrap": 200})
        assert result.metrics.one_model.excess_gap.p_value > 0.05
        # (A random encoder may also be collapsed, and then the sanity gate gives no verdict at all.)
        assert result.decision != "detected" and result.outcome.statistic == "excess_gap"


def test_direction_table_scores_a_classifier_by_its_probabilities():
    class Table:
        ids = np.array(["a", "b"])
        labels = np.array([0, 1])
    crops = {"id": np.array(["a", "b"]), **{f"square_{k}": np.zeros(2, int) for k in ("x0", "y0", "x1", "y1")}}
    target = {"ids": np.array(["a", "b"]), "neighbour_labels": np.array([[0, 0, 0, 1], [0, 0, 1, 1]])}
    reference = {"ids": np.array(["b", "a"]), "probabilities": np.array([[0.5, 0.5], [0.2, 0.8]])}
    rows = direction_table(Table, crops, np.array(["a", "b"]), "A", target, reference, "A", "classifier", 2)
    # a: target votes 3 of 4 for the true class 0 (right), the classifier 0.2 (wrong); b: the target ties
    # 2-2 (right with chance 1/2), the classifier ties 0.5-0.5 (the same).
    assert rows["target_correct"].tolist() == [1.0, 0.5] and rows["reference_correct"].tolist() == [0.0, 0.5]
    assert rows["reference_true_prob"].tolist() == [0.2, 0.5] and rows["partition"][0] == "memorized"
    h = lambda p: -sum(x * np.log(x) for x in p)  # noqa: E731
    assert rows["dejavu_score"].tolist() == pytest.approx([h([0.2, 0.8]) - h([0.75, 0.25]), 0.0], abs=1e-6)
    assert entropy_score(np.array([-0.5]), np.array([-0.5])).tolist() == [0.0]


def test_the_excess_test_on_hand_made_sets():
    diff = lambda rows: float(rows["d"].mean())  # noqa: E731
    same = excess_test({"d": np.array([1.0, 0.0] * 20)}, {"d": np.array([0.0, 1.0] * 30)}, diff, 300, seed=0)
    assert same.value == 0 and same.p_value == 1.0  # every shuffle is at least as extreme as 0
    far = excess_test({"d": np.ones(30)}, {"d": np.zeros(30)}, diff, 300, seed=0)
    assert far.value == 1 and far.p_value == 1 / 301 and far.ci == (1.0, 1.0)
    assert np.isnan(excess_test({"d": np.zeros(0)}, {"d": np.ones(3)}, diff, 10).value)
    # metrics.bootstrap=0: the difference, no interval, no p.
    none = excess_test({"d": np.ones(30)}, {"d": np.zeros(30)}, diff, 0)
    assert none.value == 1 and np.isnan(none.p_value) and all(np.isnan(none.ci))


@pytest.mark.parametrize("override, key", [
    ("correlation.epochs=0", "correlation.epochs"),
    ("correlation.backbone=vgg", "correlation.backbone"),
    ("correlation.validation_fraction=1", "correlation.validation_fraction"),
    ("correlation.min_crop_area=0", "correlation.min_crop_area"),
    ("correlation.batch_size=1", "correlation.batch_size"),
    ("correlation.lr=-1", "correlation.lr"),
    ("correlation.epoch=3", "correlation.epochs"),
])
def test_bad_correlation_keys_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])
