"""Sanity gates: no verdict for a diverged, collapsed or useless model, or for data of one class.

The pure checks against hand-computed values, then whole runs through the CLI whose models really
diverge or really collapse."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from scipy.stats import binomtest

from dejavu.cli import main
from dejavu.metrics.pvalue import format_p
from dejavu.metrics.sanity import (
    MIN_RELATIVE_SPREAD,
    accuracy_check,
    class_checks,
    embedding_checks,
    loss_checks,
    spread,
    summary,
)
from dejavu.metrics.outcomes import EXIT_CODES, HEADS, sanity_reasons, seeds_verdict
from tests.conftest import TINY, resign

# Every first words of a decision but "No verdict".
VERDICTS = tuple(HEADS[d] for d in ("detected", "not_detected", "inconclusive"))


def _by_name(checks):
    return {check.name: check for check in checks}


def test_a_falling_finite_loss_passes():
    checks = _by_name(loss_checks([22.0, 21.0, 20.3], "A", "vicreg"))
    assert all(check.passed for check in checks.values())
    assert set(checks) == {"loss finite", "loss did not blow up", "loss fell"}


def test_a_loss_that_blew_up_fails_and_names_the_epoch():
    # Model A of `train.lr=50` on the smoke config: 1.3e15 after epoch 1, 2.7e20 after epoch 2.
    checks = _by_name(loss_checks([1.307e15, 2.726e20, 2.1e17], "A", "vicreg"))
    assert not checks["loss did not blow up"].passed
    assert "epoch 2" in checks["loss did not blow up"].detail
    assert "loss fell" not in checks  # one reason is enough: blown up says it


def test_a_non_finite_loss_fails_at_its_epoch():
    (check,) = loss_checks([3.0, float("nan"), 2.0], "B", "simclr")
    assert not check.passed and "epoch 2" in check.detail


def test_a_loss_that_did_not_fall_fails_except_for_dino():
    assert not _by_name(loss_checks([5.0, 5.5], "A", "byol"))["loss fell"].passed
    # DINO's cross-entropy rises while its teacher sharpens (smoke run: 6.37 -> 7.01): not a failure.
    dino = _by_name(loss_checks([6.37, 6.9, 7.01], "A", "dino"))
    assert "loss fell" not in dino and all(check.passed for check in dino.values())


def test_spread_of_a_point_a_line_and_a_full_cloud():
    point = np.tile([1.0, 2.0, 3.0], (50, 1))
    assert spread(point) == (0.0, 0.0)
    line = np.outer(np.linspace(-1, 1, 50), [1.0, 1.0, 0.0]) + [5.0, 0.0, 0.0]
    assert spread(line)[1] == pytest.approx(1.0)
    # Rows +-e_i: every direction holds the same variance, so the effective rank is the dimension.
    cloud = np.concatenate([np.eye(4), -np.eye(4)])
    relative, rank = spread(cloud)
    assert rank == pytest.approx(4.0) and relative == pytest.approx(1.0)


def test_collapsed_and_non_finite_embeddings_fail():
    rng = np.random.default_rng(0)
    healthy = rng.normal(size=(100, 16))
    assert all(c.passed for c in embedding_checks(healthy, "A", "X"))
    collapsed = np.ones((100, 16)) + 1e-4 * healthy
    check = _by_name(embedding_checks(collapsed, "A", "X"))["embeddings not collapsed"]
    assert not check.passed and "to a point" in check.detail
    assert spread(collapsed)[0] < MIN_RELATIVE_SPREAD
    broken = healthy.copy()
    broken[3, 2] = np.inf
    (check,) = embedding_checks(broken, "B", "X")
    assert not check.passed and "1 of 100 rows" in check.detail


def test_accuracy_must_beat_the_most_frequent_class():
    labels = np.repeat(np.arange(10), 10)  # 10 balanced classes: chance is 10 %
    assert not accuracy_check(0.12, labels, "A", "kNN").passed
    good = accuracy_check(0.25, labels, "A", "kNN")
    assert good.passed
    assert f"p = {format_p(binomtest(25, 100, 0.1, alternative='greater').pvalue)}" in good.detail
    # 90 % of one class: 85 % accuracy is below always answering it.
    skewed = np.array([0] * 90 + [1] * 10)
    assert not accuracy_check(0.85, skewed, "B", "probe").passed


def test_one_class_sets_fail_and_the_summary_says_why():
    checks = class_checks({"A": np.zeros(20, int), "X": np.array([0, 1, 1])})
    outcome = summary(checks)
    assert outcome["passed"] is False
    assert outcome["failures"] == ["data: set A: 20 images of 1 class: déjà vu cannot be told from always "
                                   "answering that class"]
    reasons = sanity_reasons(outcome)
    assert [r.code for r in reasons] == ["sanity_failed"] and reasons[0].text.endswith(outcome["failures"][0])


def _run(out, *extra):
    return main(["run", "--config", "configs/smoke.yaml", "--out", str(out), "threads=1", *TINY, *extra])


def _rewrite(path, change):
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata=metadata)


@pytest.mark.slow
def test_a_collapsed_model_gets_no_verdict(tmp_path, capsys):
    """Model A's weights changed so that its projector outputs one point whatever the image: the run
    reports why there is no verdict instead of a verdict."""
    out = tmp_path / "run"
    code = _run(out)
    printed = capsys.readouterr().out
    decision = json.loads((out / "metrics.json").read_text())["outcomes"]["image"]["decision"]
    assert decision != "no_verdict" and code == EXIT_CODES[decision]
    assert any(f"{v} (image test" in printed for v in VERDICTS)

    def collapse(state):
        last = max(key for key in state if key.startswith("projector.") and key.endswith(".weight")
                   and state[key].ndim == 2)
        state[last] = torch.zeros_like(state[last])
        state[last.replace("weight", "bias")] = torch.linspace(1, 2, state[last].shape[0])

    _rewrite(out / "models" / "A" / "model.safetensors", collapse)
    resign(out)  # these weights stand for a model that trained to a collapse (else model A is trained again)
    assert main(["embed", "--out", str(out)]) == 0  # the tampered weights are re-embedded
    code = main(["run", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 3
    assert "No verdict (image test" in printed and "model A" in printed and "collapsed to a point" in printed
    assert not any(v in printed for v in VERDICTS)
    sanity = json.loads((out / "sanity.json").read_text())
    failed = [(c["subject"], c["name"]) for c in sanity["checks"] if not c["passed"]]
    assert ("A", "embeddings not collapsed") in failed and all(subject == "A" for subject, _ in failed)
    metrics = json.loads((out / "metrics.json").read_text())
    outcome = metrics["outcomes"]["image"]
    assert metrics["sanity"]["passed"] is False and outcome["decision"] == "no_verdict"
    assert {r["code"] for r in outcome["reasons"]} == {"sanity_failed"}
    report = (out / "report.html").read_text(encoding="utf-8")
    assert 'class="verdict no_verdict"' in report and "collapsed to a point" in report


@pytest.mark.slow
def test_a_diverged_training_never_ends_in_a_verdict(tmp_path, capsys):
    """`train.lr=50`: the loss explodes. Either the training stops on a non-finite loss (exit 2) or the
    run finishes without a verdict (exit 3); never a plain verdict."""
    code = _run(tmp_path / "run", "train.lr=50.0")
    captured = capsys.readouterr()
    assert code in (2, 3), captured
    assert not any(v in captured.out for v in VERDICTS)
    assert ("diverged" in captured.err) if code == 2 else ("No verdict" in captured.out and "diverged" in captured.out)


def test_a_sweep_point_with_a_failed_seed_has_no_verdict():
    assert seeds_verdict(["detected", "no_verdict"]) == (1, "no verdict in 1 of 2 seeds")
    assert seeds_verdict(["detected", "detected"]) == (2, "detected in every seed (2/2)")
