"""The one-model test's correlation classifier: it learns a background that predicts the class, stays honest
(near chance, calibrated) when nothing does, is seeded, resumes exactly, and cross-fits out of fold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dejavu.errors import CheckpointError, DataError
from dejavu.evaluate.correlation import (
    ClassifierSettings,
    calibration,
    cross_fit_probabilities,
    fit_correlation_classifier,
    fit_temperature,
    fold_assignment,
    fold_seed,
    predict_probabilities,
    validation_split,
)

SIDE = 16
FAST = {"widths": [8, 16, 32], "batch_size": 64}
PALETTE = torch.tensor([[0.2, 0.3, 0.7], [0.7, 0.3, 0.2], [0.3, 0.7, 0.3], [0.6, 0.6, 0.6]]).view(4, 3, 1, 1)


def crops_of(labels: np.ndarray, seed: int, signal: bool) -> torch.Tensor:
    """Normalised crops: per-pixel noise (sd 0.3) and a per-crop tint around the class's background colour
    (``signal``) or around grey for every class (no signal at all)."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    base = PALETTE[torch.as_tensor(labels)] if signal else torch.full((n, 3, 1, 1), 0.5)
    images = base + 0.1 * torch.rand(n, 3, 1, 1, generator=g) + 0.3 * torch.randn(n, 3, SIDE, SIDE, generator=g)
    return (images - 0.5) / 0.25


def balanced(per_class: int, classes: int = 4) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


def fit(crops, labels, seed=0, **overrides):
    settings = ClassifierSettings(**{**FAST, "epochs": 6, **overrides})
    return fit_correlation_classifier(crops, labels, 4, settings, seed=seed, device=torch.device("cpu"))


def test_it_learns_a_background_that_predicts_the_class():
    labels, test_labels = balanced(60), balanced(50)
    model = fit(crops_of(labels, 0, True), labels, epochs=8, validation_fraction=0.2)
    probabilities = predict_probabilities(model, crops_of(test_labels, 1, True))
    assert probabilities.shape == (200, 4) and probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-12)
    assert (probabilities >= 0).all()
    held_out = calibration(probabilities, test_labels)
    assert held_out["accuracy"] > 0.8, held_out
    assert held_out["ece"] < 0.1, held_out
    # What the model records: the chosen epoch, its temperature, the scaled validation fold, the history.
    assert 1 <= model.best_epoch <= 8 and model.temperature > 0
    assert model.validation["n"] == len(model.validation_rows) == 48
    assert set(model.history) == {"train_loss", "val_nll", "val_accuracy"}
    assert all(len(v) == 8 for v in model.history.values())
    assert model.history["val_nll"][model.best_epoch - 1] == min(model.history["val_nll"])
    assert not np.intersect1d(model.train_rows, model.validation_rows).size
    # Batches given as an iterable give the same probabilities as the whole tensor.
    test = crops_of(test_labels, 1, True)
    np.testing.assert_allclose(predict_probabilities(model, [test[:77], test[77:]], batch_size=16),
                               predict_probabilities(model, test), atol=1e-6)


def test_random_labels_stay_near_chance_and_honestly_calibrated():
    rng = np.random.default_rng(0)
    labels, test_labels = rng.integers(0, 4, 800), rng.integers(0, 4, 800)
    model = fit(crops_of(labels, 2, False), labels, epochs=10, validation_fraction=0.25)
    held_out = calibration(predict_probabilities(model, crops_of(test_labels, 3, False)), test_labels)
    # Over six seeds: accuracy 0.225..0.264, |confidence - accuracy| and ECE at most 0.04.
    assert held_out["accuracy"] < 0.32, held_out
    assert abs(held_out["mean_confidence"] - held_out["accuracy"]) < 0.07, held_out
    assert held_out["ece"] < 0.07, held_out
    assert held_out["nll"] < math.log(4) + 0.05, held_out  # never much worse than the uniform guess


def test_temperature_scaling_minimises_the_validation_nll():
    rng = np.random.default_rng(1)
    labels = torch.as_tensor(rng.integers(0, 3, 300))
    logits = torch.as_tensor(rng.normal(size=(300, 3))) + 2.0 * torch.nn.functional.one_hot(labels, 3)
    overconfident = 5.0 * logits
    temperature = fit_temperature(overconfident, labels)

    def nll(t: float) -> float:
        return float(torch.nn.functional.cross_entropy(overconfident.double() / t, labels))

    assert temperature > 1.0
    assert nll(temperature) <= min(nll(temperature * 0.99), nll(temperature * 1.01), nll(1.0))


def test_without_a_validation_fold_the_last_epoch_is_kept_unscaled():
    labels = balanced(10)
    model = fit(crops_of(labels, 4, True), labels, epochs=2, validation_fraction=0.0)
    assert model.temperature == 1.0 and model.best_epoch == 2 and model.validation == {}
    assert len(model.history["train_loss"]) == 2 and model.history["val_nll"] == []
    assert len(model.train_rows) == 40


def test_the_same_seed_gives_identical_probabilities_and_leaves_the_global_rng_alone():
    labels = balanced(16)
    crops, test = crops_of(labels, 5, True), crops_of(balanced(5), 6, True)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = predict_probabilities(fit(crops, labels, seed=7, epochs=3), test)
    assert torch.equal(torch.get_rng_state(), before)
    b = predict_probabilities(fit(crops, labels, seed=7, epochs=3), test)
    c = predict_probabilities(fit(crops, labels, seed=8, epochs=3), test)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


class Interrupted(Exception):
    pass


def test_resume_after_an_interruption_gives_identical_probabilities(tmp_path):
    labels = balanced(20)
    crops, test = crops_of(labels, 7, True), crops_of(balanced(5), 8, True)
    settings = ClassifierSettings(**FAST, epochs=5, validation_fraction=0.2)
    straight = fit_correlation_classifier(crops, labels, 4, settings, seed=3, device=torch.device("cpu"))

    def stop_after_two(epoch: int, values: dict) -> None:
        assert set(values) == {"train_loss", "val_nll", "val_accuracy"}
        if epoch == 2:
            raise Interrupted

    state = tmp_path / "classifier" / "state.pt"
    with pytest.raises(Interrupted):
        fit_correlation_classifier(crops, labels, 4, settings, seed=3, state_path=state, on_epoch=stop_after_two)
    saved = torch.load(state, weights_only=True)  # tensors, numbers and lists only
    assert saved["epoch"] == 2 and len(saved["history"]["train_loss"]) == 2

    epochs_run = []
    resumed = fit_correlation_classifier(crops, labels, 4, settings, seed=3, state_path=state,
                                         on_epoch=lambda epoch, _: epochs_run.append(epoch))
    assert epochs_run == [3, 4, 5]
    assert np.array_equal(predict_probabilities(resumed, test), predict_probabilities(straight, test))
    assert resumed.history == straight.history and resumed.best_epoch == straight.best_epoch
    assert resumed.temperature == straight.temperature

    # A finished state rebuilds the same classifier without training.
    again = fit_correlation_classifier(crops, labels, 4, settings, seed=3, state_path=state,
                                       on_epoch=lambda epoch, _: epochs_run.append(epoch))
    assert epochs_run == [3, 4, 5]
    assert np.array_equal(predict_probabilities(again, test), predict_probabilities(straight, test))

    # Another seed, other settings or other data: refused, in one line naming the file.
    for seed, other, data in ((4, settings, crops), (3, ClassifierSettings(**FAST, epochs=6), crops),
                              (3, settings, crops + 0.01)):
        with pytest.raises(CheckpointError, match="delete it") as error:
            fit_correlation_classifier(data, labels, 4, other, seed=seed, state_path=state)
        assert str(state) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="seed"):
        fit_correlation_classifier(crops, labels, 4, settings, seed=4, state_path=state)
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="unreadable"):
        fit_correlation_classifier(crops, labels, 4, settings, seed=3, state_path=state)


def test_cross_fit_predicts_every_row_by_a_classifier_that_never_saw_it(tmp_path):
    labels = balanced(15)
    crops = crops_of(labels, 9, True)
    settings = ClassifierSettings(**FAST, epochs=2, validation_fraction=0.2)
    folds = fold_assignment(labels, 2, seed=5)
    assert np.array_equal(folds, fold_assignment(labels, 2, seed=5))
    for c in range(4):  # stratified: each class split as evenly as it can be
        assert abs(np.sum(folds[labels == c] == 0) - np.sum(folds[labels == c] == 1)) <= 1
    out = cross_fit_probabilities(crops, labels, 4, settings, seed=5, folds=2, device=torch.device("cpu"),
                                  state_dir=tmp_path)
    assert out.shape == (60, 4)
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold_0.pt", "fold_1.pt"]
    for k in range(2):
        # Fold k's rows are exactly what a classifier given only the other fold's crops predicts.
        trained_on, predicted = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        model = fit_correlation_classifier(crops[trained_on], labels[trained_on], 4, settings, fold_seed(5, k),
                                           device=torch.device("cpu"))
        assert np.array_equal(out[predicted], predict_probabilities(model, crops[predicted]))
    assert fold_seed(5, 0) != fold_seed(5, 1) != fold_seed(6, 0)


def test_cross_fit_is_near_chance_where_a_memorising_fit_is_not():
    """Noise crops with random labels: a classifier that memorises its training rows gets them right, so
    in-fold scores are high; cross-fitted scores can only be near chance, as no fold saw the rows it scores."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 160)
    labels[:4] = np.arange(4)
    crops = crops_of(labels, 10, False)
    settings = ClassifierSettings(**FAST, epochs=25, validation_fraction=0.0, flip=False, min_crop_area=1.0,
                                  lr=3e-3, weight_decay=0.0)
    in_fold = predict_probabilities(fit_correlation_classifier(crops, labels, 4, settings, 0, device="cpu"), crops)
    out_of_fold = cross_fit_probabilities(crops, labels, 4, settings, seed=0, folds=2, device="cpu")
    assert calibration(in_fold, labels)["accuracy"] > 0.6
    assert calibration(out_of_fold, labels)["accuracy"] < 0.4


def test_calibration_matches_a_hand_computed_example():
    probabilities = np.array([[0.65, 0.25, 0.10],   # label 0: right, confidence 0.65
                              [0.15, 0.55, 0.30],   # label 2: wrong, confidence 0.55
                              [0.05, 0.10, 0.85],   # label 2: right, confidence 0.85
                              [0.45, 0.35, 0.20]])  # label 1: wrong, confidence 0.45
    labels = np.array([0, 2, 2, 1])
    two = calibration(probabilities, labels, bins=2)
    # Bin (0, .5]: one wrong row at .45. Bin (.5, 1]: accuracy 2/3, mean confidence 2.05/3.
    assert two["ece"] == pytest.approx(1 / 4 * 0.45 + 3 / 4 * abs(2 / 3 - 2.05 / 3))
    assert two["ece"] == pytest.approx(0.125)
    assert calibration(probabilities, labels, bins=10)["ece"] == pytest.approx((0.45 + 0.55 + 0.35 + 0.15) / 4)
    assert two["n"] == 4 and two["accuracy"] == 0.5 and two["mean_confidence"] == pytest.approx(0.625)
    assert two["nll"] == pytest.approx(-(math.log(0.65) + math.log(0.30) + math.log(0.85) + math.log(0.35)) / 4)
    # Brier: squared distances to the one-hot rows, 0.195 + 0.815 + 0.035 + 0.665, averaged.
    assert two["brier"] == pytest.approx(1.71 / 4)
    perfect = calibration(np.eye(3), np.arange(3))
    assert perfect["ece"] == 0.0 and perfect["brier"] == 0.0 and perfect["nll"] == pytest.approx(0.0)


def test_validation_split_is_stratified_seeded_and_keeps_a_crop_of_every_class():
    labels = np.array([0] * 10 + [1] * 20 + [2])
    train, val = validation_split(labels, 0.2, seed=1)
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 4, 0]
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(31))
    assert np.array_equal(val, validation_split(labels, 0.2, seed=1)[1])
    assert not np.array_equal(val, validation_split(labels, 0.2, seed=2)[1])


def test_bad_data_is_refused_in_one_line_saying_what_was_found():
    crops, settings = crops_of(balanced(3), 0, True), ClassifierSettings(**FAST, epochs=1)
    cases = [
        (crops, balanced(3)[:-1], 4, "12 crops but labels of shape \\(11,\\)"),
        (crops, np.zeros(12, np.int64), 1, "at least 2 classes, found n_classes = 1"),
        (crops, balanced(4, 3), 4, "1 of 4 classes have no training crop \\(class 3\\)"),
        (crops, np.full(12, 7), 4, "labels must lie in \\[0, 4\\), found 7..7"),
        (crops, balanced(3).astype(float), 4, "labels must be integers"),
        (crops[:, :, :, :8], balanced(3), 4, "crops must be a float tensor \\(N, 3, s, s\\)"),
    ]
    for data, labels, n_classes, message in cases:
        with pytest.raises(DataError, match=message) as error:
            fit_correlation_classifier(data, labels, n_classes, settings, seed=0)
        assert "\n" not in str(error.value)
    with pytest.raises(DataError, match="holds out none"):
        fit_correlation_classifier(crops, balanced(3), 4, ClassifierSettings(validation_fraction=0.01), seed=0)
    with pytest.raises(DataError, match="at least 2 crops of every class, found 1 of class 3"):
        cross_fit_probabilities(crops[:10], np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3]), 4, settings, seed=0)
    with pytest.raises(DataError, match="N labels"):
        calibration(np.ones((3, 2)) / 2, np.zeros(2, np.int64))
