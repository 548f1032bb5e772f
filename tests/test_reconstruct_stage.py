"""The reconstruct stage (issue 15): both models' decoders draw the chosen crops, a judge trained on X labels the
samples, and metrics.json and the report carry the target-vs-reference test of what they show."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dejavu.api import execute
from dejavu.artifacts import load_reconstructions
from dejavu.attack.vote import confidence, vote
from dejavu.cli import main
from dejavu.config import load_config
from dejavu.data.scenes import ScenesDataset
from dejavu.errors import ConfigError, RunFolderError
from dejavu.reconstruct.colour import class_hues, colour_labels
from dejavu.reconstruct.decoder import ConditionalDecoder, DecoderSettings
from dejavu.reconstruct.grids import grid_image
from dejavu.reconstruct.scoring import paired_directions
from dejavu.metrics.outcomes import reconstruction_outcome
from dejavu.runs import Run
from dejavu.stages.reconstruct import balanced_rows
from tests.conftest import TINY, resign

SAMPLES, CHOSEN = 2, 6
RECONSTRUCT = ["reconstruct.enabled=true", "reconstruct.image_size=16", "reconstruct.channels=[8,16]",
               "reconstruct.iterations=30", "reconstruct.batch_size=32", "reconstruct.judge_epochs=2",
               "reconstruct.steps=4", f"reconstruct.per_direction={CHOSEN}", f"reconstruct.samples={SAMPLES}",
               "reconstruct.neighbours=3", "reconstruct.checkpoint_every=10"]


@pytest.fixture(scope="module")
def reconstructed(tmp_path_factory):
    out = tmp_path_factory.mktemp("reconstruct") / "run"
    execute(out, load_config(None, [*TINY, *RECONSTRUCT]), log=lambda message: None)
    return out


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_both_decoders_draw_every_chosen_crop_and_the_numbers_follow_from_their_labels(reconstructed):
    rows = _csv(reconstructed / "reconstruction/reconstructions.csv")
    for name in ("A", "B", "T"):
        drawn = np.load(reconstructed / f"reconstruction/samples_{name}.npz")
        n = len(drawn["ids"])
        assert 0 < n <= CHOSEN
        assert drawn["samples_A"].shape == drawn["samples_B"].shape == (n, SAMPLES, 16, 16, 3)
        assert drawn["crops"].shape == (n, 16, 16, 3)
        # Two decoders of two models draw different pictures from the same noise.
        assert not np.array_equal(drawn["samples_A"], drawn["samples_B"])
        grid = Image.open(reconstructed / f"reconstruction/grid_{name}.png")
        assert grid.size == (2 + (2 * SAMPLES + 3) * 18, 2 + n * 18)  # crop, blank, samples, blank, samples
        ours = [r for r in rows if r["set"] == name]
        assert sorted((r["id"], r["model"]) for r in ours) == sorted((i, m) for i in drawn["ids"] for m in "AB")
    for row in rows:  # a share is the fraction of the row's samples the judge gave the true class
        labels = [int(v) for v in row["judge_labels"].split()]
        assert len(labels) == SAMPLES
        assert float(row["judge_share"]) == pytest.approx(np.mean(np.array(labels) == int(row["label"])))
    metrics = json.loads((reconstructed / "metrics.json").read_text())["reconstruction"]
    shares = {(r["id"], r["model"]): float(r["judge_share"]) for r in rows}
    attacked = _csv(reconstructed / "samples.csv")
    per_direction = []
    for direction in ("A", "B"):
        picked = [r for r in attacked if r["direction"] == direction and (r["id"], r["target_model"]) in shares]
        per_direction.append(np.mean([shares[r["id"], r["target_model"]] for r in picked]))
    assert metrics["n"] == sum(r["set"] in "AB" for r in rows) // 2
    assert metrics["target_acc"] == pytest.approx(np.mean(per_direction))
    assert metrics["control"]["n"] == sum(r["set"] == "T" for r in rows) // 2
    assert set(metrics["colour"]) >= {"gap", "mcnemar_p", "control"}, "the built-in data get the colour score"
    assert 0 <= metrics["judge"]["T"]["accuracy"] <= 1 and set(metrics["fidelity"]) == {"n", "A", "B"}
    page = (reconstructed / "report.html").read_text()
    assert 'id="reconstruction"' in page and "never saw an image of A, B or T" in page


def test_the_judge_and_the_decoders_learn_from_X_alone(reconstructed):
    split = json.loads((reconstructed / "data/split.json").read_text())["sets"]
    trained = np.load(reconstructed / "reconstruction/training_ids.npz")["ids"].tolist()
    assert sorted(trained) == sorted(split["X"])
    assert not set(trained) & set(split["A"] + split["B"] + split["T"])
    summary = json.loads((reconstructed / "reconstruction/reconstruction.json").read_text())
    assert summary["trained_on"] == {"X": len(split["X"])}
    assert not list((reconstructed / "reconstruction").glob("*.resume.pt")), "finished: no resume state is left"


def test_the_chosen_crops_are_the_most_confident_by_both_models_alike(reconstructed):
    config = load_config(reconstructed / "config.json")
    for name in ("A", "T"):
        score = {}
        for model in "AB":
            found = np.load(reconstructed / f"neighbours/model_{model}/crops_{name}.npz")
            for crop, value in zip(found["ids"], confidence(vote(found["neighbour_labels"], config.data.n_classes))):
                score[str(crop)] = score.get(str(crop), 0.0) + float(value)
        drawn = set(np.load(reconstructed / f"reconstruction/samples_{name}.npz")["ids"].tolist())
        left = set(score) - drawn
        assert len(drawn) == min(CHOSEN, len(score))
        if left:
            assert min(score[i] for i in drawn) >= max(score[i] for i in left)


def test_reconstructions_are_reproducible_from_the_seed(reconstructed):
    before = {name: dict(np.load(reconstructed / f"reconstruction/samples_{name}.npz")) for name in ("A", "T")}
    table = (reconstructed / "reconstruction/reconstructions.csv").read_text()
    assert main(["reconstruct", "--out", str(reconstructed)]) == 0
    for name, arrays in before.items():
        again = np.load(reconstructed / f"reconstruction/samples_{name}.npz")
        for key, value in arrays.items():
            np.testing.assert_array_equal(again[key], value)
    assert (reconstructed / "reconstruction/reconstructions.csv").read_text() == table


@pytest.mark.parametrize("field, value, message", [(6, "1.5", "judge_share"), (2, "cat", "label = 'cat'")])
def test_a_damaged_reconstructions_table_is_refused_naming_the_file(reconstructed, tmp_path, field, value, message):
    copy = tmp_path / "run"
    shutil.copytree(reconstructed, copy)
    path = copy / "reconstruction/reconstructions.csv"
    lines = path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[field] = value
    path.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    resign(copy)
    run = Run(copy, load_config(copy / "config.json"))
    with pytest.raises(RunFolderError, match=f"reconstructions.csv.*{message}"):
        load_reconstructions(run)


@pytest.mark.parametrize("override, message", [
    ("reconstruct.image_size=18", "reconstruct.image_size"),
    ("reconstruct.lr=0", "reconstruct.lr"),
    ("reconstruct.samples=0", "reconstruct.samples"),
    ("reconstruct.prediction=sample", "reconstruct.prediction"),
    ("reconstruct.enabled=true reconstruct.neighbours=500", "reconstruct.neighbours"),
    ("reconstruct.ema_decay=1", "reconstruct.ema_decay"),
    ("reconstruct.channels=[]", "reconstruct.channels"),
    ("reconstruct.per_direction=-1", "reconstruct.per_direction"),
    ("reconstruct.steps=200 reconstruct.diffusion_steps=100", "reconstruct.steps"),
    ("reconstruct.guidance=2", "reconstruct.guidance"),
    ("reconstruct.guidance=0.5 reconstruct.condition_dropout=0.1", "reconstruct.guidance"),
    ("reconstruct.condition_dropout=1", "reconstruct.condition_dropout"),
])
def test_bad_reconstruct_values_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, override.split())


def test_a_one_model_audit_cannot_reconstruct():
    with pytest.raises(ConfigError, match="reconstruct.enabled"):
        load_config(None, ["reconstruct.enabled=true", "model.target=/tmp/a.pth"])


def test_the_colour_score_reads_the_object_colour_of_real_scenes():
    data = ScenesDataset(n_classes=10, images_per_class=20, image_size=64, seed=3)
    images = torch.from_numpy(np.stack([data[i].image for i in range(len(data))])).permute(0, 3, 1, 2).float() / 255
    labels = np.array([data[i].label for i in range(len(data))])
    small = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=True)
    assert np.mean(colour_labels(small, class_hues(data.class_colour)) == labels) > 0.9
    grey = torch.full((2, 3, 8, 8), 0.5)
    assert colour_labels(grey, class_hues(data.class_colour)).tolist() == [-1, -1], "no object colour, no label"


def test_attack_rows_pair_the_target_and_reference_reconstructions():
    columns = {"id": np.array(["a", "b", "t"]), "direction": np.array(["A", "B", "A"]),
               "target_model": np.array(["A", "B", "A"]), "reference_model": np.array(["B", "A", "B"]),
               "target_confidence": np.array([-0.1, -0.2, -0.3]), "reference_confidence": np.array([-1.0, -2.0, -3.0])}
    shares = {("a", "A"): 1.0, ("a", "B"): 0.25, ("b", "A"): 0.5, ("b", "B"): 0.75}  # "t" was not drawn
    paired = paired_directions(columns, shares)
    assert paired["A"]["target_ok"].tolist() == [1.0] and paired["A"]["reference_ok"].tolist() == [0.25]
    assert paired["B"]["target_ok"].tolist() == [0.75] and paired["B"]["reference_ok"].tolist() == [0.5]
    assert paired["B"]["reference_confidence"].tolist() == [-2.0]


def test_a_grid_row_holds_the_crop_then_each_models_samples():
    crops = torch.zeros((3, 3, 4, 4))
    samples = [torch.full((3, 2, 3, 4, 4), 0.5), torch.ones((3, 2, 3, 4, 4))]
    grid = grid_image(crops, samples, padding=1)
    assert grid.shape == (1 + 3 * 5, 1 + 7 * 5, 3)
    assert grid[1, 1].tolist() == [0, 0, 0] and grid[1, 1 + 2 * 5].tolist() == [128, 128, 128]
    # A set with no kept crop draws none: a blank strip as wide as its rows would be, not a crash.
    empty = grid_image(crops[:0], [drawn[:0] for drawn in samples], padding=1)
    assert empty.shape == (1, grid.shape[1], 3) and (empty == 255).all()


def test_the_decoder_sees_conditions_standardised_by_their_training_statistics():
    settings = DecoderSettings(image_size=8, channels=[8, 8], attention_below=0, iterations=1)
    torch.manual_seed(0)
    decoder = ConditionalDecoder(3, settings).eval()
    conditions = torch.randn(16, 3)
    decoder.fit_standardisation(conditions)
    noised, steps = torch.randn(2, 3, 8, 8), torch.tensor([10, 500])
    reference = decoder(noised, steps, conditions[:2])
    decoder.fit_standardisation(conditions * 7 + 3)  # the same embeddings in other units
    torch.testing.assert_close(decoder(noised, steps, conditions[:2] * 7 + 3), reference)


def test_the_fidelity_images_are_drawn_evenly_over_the_classes():
    labels = np.array([0] * 300 + [1] * 50 + [2] * 8)
    rows = balanced_rows(labels, 30, seed=4)
    assert np.bincount(labels[rows]).tolist() == [11, 11, 8], "every class as far as it goes, then the others"
    assert len(set(rows.tolist())) == 30 and np.array_equal(rows, np.sort(rows))
    np.testing.assert_array_equal(rows, balanced_rows(labels, 30, seed=4))
    assert not np.array_equal(rows, balanced_rows(labels, 30, seed=5))


def _decided(gap: float, p: float, control_gap: float, control_p: float, passed: bool = True, half: float = 0.03):
    test = {"n": 200, "target_acc": 0.3 + gap, "reference_acc": 0.3, "gap": gap, "mcnemar_p": p,
            "gap_ci95": [gap - half, gap + half], "control": {"n": 100, "gap": control_gap, "mcnemar_p": control_p}}
    sanity = {"passed": passed, "failures": [] if passed else ["model A: collapsed to a point"]}
    return reconstruction_outcome({"reconstruction": test, "ci_level": 0.95, "sanity": sanity}, 0.01, 0.05)


def test_the_reconstruction_outcome_needs_a_quiet_control():
    detected = _decided(0.12, 1e-4, 0.01, 0.8)
    assert detected.decision == "detected" and detected.statistic == "reconstruction_gap"
    refused = _decided(0.12, 1e-4, 0.15, 1e-3)
    assert refused.decision == "no_verdict" and [r.code for r in refused.reasons] == ["control_not_clean"]
    assert "+15.0 points" in refused.sentence
    assert [r.code for r in _decided(0.12, 1e-4, 0.01, 0.8, passed=False).reasons] == ["sanity_failed"]
    # Not significant: cleared only when the interval is tight around zero.
    assert _decided(0.01, 0.6, 0.0, 1.0).decision == "not_detected"
    assert _decided(0.01, 0.6, 0.0, 1.0, half=0.08).decision == "inconclusive"
