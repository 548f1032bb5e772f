"""Conventional metrics: linear probe, kNN accuracy, the evaluate stage and its report section."""

import json
import time

import numpy as np
import pytest
import torch

from dejavu.config import load_config
from dejavu.errors import ConfigError
from dejavu.evaluate.conventional import LayerStack, evaluation_layers
from dejavu.evaluate.knn import knn_accuracy
from dejavu.evaluate.probe import linear_probe
from dejavu.models.encoder import Encoder
from dejavu.runs import Run
from dejavu.stages import STAGE_BY_NAME


def _separable(n: int, dim: int, n_classes: int, seed: int):
    """Gaussian clouds around class means far apart: linearly separable with overwhelming probability."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=6.0, size=(n_classes, dim))
    labels = rng.integers(0, n_classes, size=n)
    return (means[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def test_probe_separates_separable_classes():
    x, y = _separable(800, 32, 5, seed=0)
    start = time.perf_counter()
    result = linear_probe(x[:400], y[:400], x[400:], y[400:], n_classes=5, epochs=100)
    assert time.perf_counter() - start < 5
    assert result["train_accuracy"] == 1.0
    assert result["test_accuracy"] >= 0.99


def test_probe_is_not_fooled_by_an_offset_and_scale():
    # Standardisation: a huge offset and a tiny scale on the features must change nothing.
    x, y = _separable(600, 16, 4, seed=1)
    plain = linear_probe(x[:300], y[:300], x[300:], y[300:], n_classes=4)
    shifted = linear_probe(x[:300] * 1e-2 + 100, y[:300], x[300:] * 1e-2 + 100, y[300:], n_classes=4)
    assert plain["test_accuracy"] >= 0.99 and shifted["test_accuracy"] >= 0.99


def test_probe_on_random_labels_memorises_train_but_not_test():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1200, 64)).astype(np.float32)
    y = rng.integers(0, 4, size=1200)
    result = linear_probe(x[:200], y[:200], x[200:], y[200:], n_classes=4, epochs=200)
    # 200 rows in 64 dims: a linear model fits far more of them than chance...
    assert result["train_accuracy"] > 0.6
    # ...while on fresh rows it stays at chance (1/4; 1000 rows give a standard error of 1.4 points).
    assert abs(result["test_accuracy"] - 0.25) < 0.06
    assert result["train_accuracy"] - result["test_accuracy"] > 0.3


def test_probe_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 20)).astype(np.float32)
    y = rng.integers(0, 3, size=300)
    torch.manual_seed(0)
    expected_draw = torch.rand(1)
    torch.manual_seed(0)
    runs = [linear_probe(x[:150], y[:150], x[150:], y[150:], n_classes=3, epochs=5, seed=7) for _ in range(2)]
    assert runs[0] == runs[1]
    assert torch.rand(1) == expected_draw  # the probe draws from its own generator, not torch's global one


def test_probe_refuses_labels_outside_the_classes():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="labels"):
        linear_probe(x, np.array([0, 1, 2, 3]), x, np.array([0, 1, 2, 3]), n_classes=3)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_knn_accuracy_on_its_own_database_with_k1_is_perfect(backend):
    rng = np.random.default_rng(4)
    database = rng.normal(size=(200, 8)).astype(np.float32)
    labels = rng.integers(0, 10, size=200)  # random labels: only the query itself can vote them right
    assert knn_accuracy(database, labels, database, labels, k=1, backend=backend) == 1.0
    # With k = 5 the other neighbours outvote most random labels.
    assert knn_accuracy(database, labels, database, labels, k=5, backend=backend) < 0.7


def test_layer_stack_equals_encoder_embed():
    torch.manual_seed(0)
    encoder = Encoder("convnet", [4, 8], "16-12-8", input_size=16).eval()
    images = torch.randn(5, 3, 16, 16)
    for layers in (["backbone"], ["backbone", "projector"], ["backbone", "projector2"]):
        stack = LayerStack(encoder, layers)
        with torch.no_grad():
            parts = stack.split(stack.embed(images, stack.key).numpy())
            for layer in layers:
                np.testing.assert_allclose(parts[layer], encoder.embed(images, layer).numpy(), rtol=1e-5, atol=1e-6)
    assert evaluation_layers("backbone") == ["backbone"]
    assert evaluation_layers("projector1") == ["backbone", "projector1"]


def test_config_section_is_validated():
    from tests.conftest import TINY

    for key in ("evaluate.knn_k", "evaluate.probe_epochs"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [*TINY, f"{key}=0"])
    assert load_config(None, TINY).evaluate.knn_k == 20


def test_stage_order_and_dependencies():
    stages = list(STAGE_BY_NAME)
    assert stages.index("evaluate") == stages.index("embed") + 1
    assert set(STAGE_BY_NAME["evaluate"].reads) == {"data", "split", "train_A", "train_B"}
    assert {"metrics", "evaluate"} <= set(STAGE_BY_NAME["report"].reads)
    assert stages.index("report") > stages.index("metrics")


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    from tests.conftest import TINY
    from dejavu.stages import run_stage

    run = Run(tmp_path_factory.mktemp("evaluate") / "run", load_config(None, TINY))
    run.claim()
    for stage in ("data", "split", "train_A", "train_B", "evaluate"):
        run_stage(run, stage, log=lambda _: None)
    return run


def test_stage_evaluate_writes_accuracies_for_both_models_and_layers(evaluated_run):
    evaluation = json.loads((evaluated_run.root / "evaluation.json").read_text())
    config = evaluated_run.config
    assert evaluation["k"] == min(config.evaluate.knn_k, evaluation["sizes"]["X"])
    assert evaluation["sizes"] == {"X": 16 * 10, "T": 8 * 10, "A": 8 * 10, "B": 8 * 10}
    assert set(evaluation["models"]) == {"A", "B"}
    assert evaluation["layers"] == ["backbone", config.attack.layer]
    assert "memorization" in evaluation["note"]
    for model in ("A", "B"):
        assert set(evaluation["models"][model]) == {"backbone", config.attack.layer}
        for numbers in evaluation["models"][model].values():
            for metric in ("knn", "linear_probe"):
                entry = numbers[metric]
                assert 0.0 <= entry["train"] <= 1.0 and 0.0 <= entry["test"] <= 1.0
                assert entry["gap"] == pytest.approx(entry["train"] - entry["test"])
                # Accuracies over 80 images are multiples of 1/80.
                assert entry["test"] * 80 == pytest.approx(round(entry["test"] * 80))
    # Probe fitted on 80 training images of 10 classes in >= 8 dims: it fits its training set well.
    assert evaluation["models"]["A"]["backbone"]["linear_probe"]["train"] > 0.3


def test_stage_evaluate_is_reproducible_and_up_to_date(evaluated_run):
    from dejavu.stages import run_stage

    path = evaluated_run.root / "evaluation.json"
    before = json.loads(path.read_text())
    assert run_stage(evaluated_run, "evaluate", log=lambda _: None) is None  # fingerprint matches: skipped
    run_stage(evaluated_run, "evaluate", force=True, log=lambda _: None)
    assert json.loads(path.read_text()) == before


def test_conventional_section_renders_the_numbers(evaluated_run, tmp_path):
    from dejavu.report.conventional import conventional_section
    from dejavu.report.format import pct, points

    html = conventional_section(evaluated_run)
    evaluation = json.loads((evaluated_run.root / "evaluation.json").read_text())
    for model in ("A", "B"):
        for numbers in evaluation["models"][model].values():
            for metric in ("knn", "linear_probe"):
                assert pct(numbers[metric]["test"]) in html and points(numbers[metric]["gap"]) in html
    assert html.count("<table") == 2 and "A (target)" in html and "B (reference)" in html
    assert "do not measure memorization" in html
    missing = conventional_section(Run(tmp_path / "empty", evaluated_run.config))
    assert "Not computed" in missing and "<table" not in missing
