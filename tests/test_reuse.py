"""Stages adopted from another run folder (a sweep's shared trainings) equal the stages computed afresh."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dejavu.config import load_config, saved_epochs
from dejavu.errors import CheckpointError, ConfigError
from dejavu.stages import adopt_stages, run_all, run_stage
from dejavu.stages.attack import weights_path
from dejavu.runs import Run, derive_seeds, load_npz, read_json


def _run(root, overrides):
    run = Run(root, load_config(None, overrides))
    run.claim()
    return run


def test_a_point_differing_after_training_adopts_the_training_and_matches_a_fresh_run(tmp_path, tiny_overrides):
    donor = _run(tmp_path / "donor", [*tiny_overrides, "attack.layer=backbone"])
    run_all(donor, log=lambda m: None)
    (donor.model_dir("A") / "resume.pt").write_bytes(b"work in progress")  # never linked
    other = [*tiny_overrides, "attack.layer=projector"]
    adopted_run = _run(tmp_path / "adopted", other)
    stale = adopted_run.model_dir("A") / "checkpoints" / "epoch_00099.safetensors"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left from an earlier training")
    messages = []
    assert adopt_stages(adopted_run, [adopted_run], log=messages.append) == []  # not its own donor
    adopted = adopt_stages(adopted_run, [adopted_run, donor], log=messages.append)
    assert adopted == ["data", "split", "crops", "train_A", "train_B"]
    assert messages == [f"[reuse] data, split, crops, train_A, train_B taken from {donor.root}"]
    weights = adopted_run.model_dir("A") / "model.safetensors"
    # Hard links: the bytes are stored once; files of the stage the donor lacks are gone, work in progress is not taken.
    assert os.path.samefile(weights, donor.model_dir("A") / "model.safetensors")
    assert not stale.exists() and not (adopted_run.model_dir("A") / "resume.pt").exists()
    run_all(adopted_run, log=lambda m: None)
    assert read_json(adopted_run.marker("train_A"))["adopted_from"] == str(donor.root)
    fresh = _run(tmp_path / "fresh", other)
    run_all(fresh, log=lambda m: None)
    assert read_json(adopted_run.root / "metrics.json") == read_json(fresh.root / "metrics.json")
    assert read_json(adopted_run.root / "evaluation.json") == read_json(fresh.root / "evaluation.json")
    # A third folder adopting from the second names the folder that computed the training.
    third = _run(tmp_path / "third", [*tiny_overrides, "attack.k=4"])
    assert "train_A" in adopt_stages(third, [adopted_run], log=lambda m: None)
    assert read_json(third.marker("train_A"))["adopted_from"] == str(donor.root)
    # Re-training in the adopted folder replaces its link: the donor's weights stay as they were.
    before = (donor.model_dir("A") / "model.safetensors").read_bytes()
    run_stage(adopted_run, "train_A", force=True, log=lambda m: None)
    assert not os.path.samefile(weights, donor.model_dir("A") / "model.safetensors")
    assert (donor.model_dir("A") / "model.safetensors").read_bytes() == before
    assert "adopted_from" not in read_json(adopted_run.marker("train_A"))


def test_only_stages_with_equal_fingerprints_are_adopted(tmp_path, tiny_overrides):
    donor = _run(tmp_path / "donor", tiny_overrides)
    run_all(donor, log=lambda m: None)
    # Another split size: the data is the same, the split (and all after it) is not.
    bigger = _run(tmp_path / "bigger", [*tiny_overrides, "split.a_per_class=7", "split.b_per_class=7"])
    assert adopt_stages(bigger, [donor], log=lambda m: None) == ["data"]
    # Another training recipe: data, split and crops are shared, neither training.
    recipe = _run(tmp_path / "recipe", [*tiny_overrides, "train.vicreg.sim_weight=10"])
    assert adopt_stages(recipe, [donor], log=lambda m: None) == ["data", "split", "crops"]
    # Another seed re-draws the data: nothing to share.
    seeded = _run(tmp_path / "seeded", [*tiny_overrides, "seed=1"])
    assert adopt_stages(seeded, [donor], log=lambda m: None) == []
    # Another training seed over the same data split: data, split, crops.
    trained = _run(tmp_path / "trained", [*tiny_overrides, "train.seed=5"])
    assert adopt_stages(trained, [donor], log=lambda m: None) == ["data", "split", "crops"]
    assert trained.seeds["train"] != donor.seeds["train"]
    assert {k: v for k, v in trained.seeds.items() if k != "train"} == {k: v for k, v in donor.seeds.items() if k != "train"}


def test_the_training_seed_repeats_a_training_over_the_same_split(tmp_path, tiny_overrides):
    runs = [_run(tmp_path / str(seed), [*tiny_overrides, f"train.seed={seed}"]) for seed in (0, 1)]
    for run in runs:
        run_all(run, log=lambda m: None)
    assert read_json(runs[0].data_dir / "split.json") == read_json(runs[1].data_dir / "split.json")
    first, second = (load_npz(r.embeddings_dir / "model_A" / "public_X.npz")["embeddings"] for r in runs)
    assert not np.array_equal(first, second)
    assert read_json(runs[1].root / "run.json")["train_seed"] == 1
    assert derive_seeds(3, 1)["train"] == derive_seeds(1)["train"] != derive_seeds(3)["train"]


def test_attack_epoch_audits_the_checkpoint_of_that_epoch(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "train.epochs=4", "train.checkpoint_every=2"]
    final = _run(tmp_path / "final", overrides)
    run_all(final, log=lambda m: None)
    early = _run(tmp_path / "early", [*overrides, "attack.epoch=2"])
    assert adopt_stages(early, [final], log=lambda m: None)[-2:] == ["train_A", "train_B"]
    assert weights_path(early, "A") == early.model_dir("A") / "checkpoints" / "epoch_00002.safetensors"
    run_all(early, log=lambda m: None)
    at_final = load_npz(final.embeddings_dir / "model_A" / "public_X.npz")["embeddings"]
    at_two = load_npz(early.embeddings_dir / "model_A" / "public_X.npz")["embeddings"]
    assert not np.array_equal(at_final, at_two)
    # attack.epoch = train.epochs is the final weights.
    last = Run(tmp_path / "last", load_config(None, [*overrides, "attack.epoch=4"]))
    assert weights_path(last, "A").name == "model.safetensors"
    # A checkpoint deleted since: the error says which epochs the folder holds.
    (early.model_dir("B") / "checkpoints" / "epoch_00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"holds only the final weights \(epoch 4\).*dejavu train --model B"):
        weights_path(early, "B")


def test_an_epoch_the_training_does_not_keep_is_refused_naming_the_kept_epochs():
    assert saved_epochs(load_config(None, ["train.epochs=10", "train.checkpoint_every=4"]).train) == [4, 8, 10]
    assert saved_epochs(load_config(None, ["train.epochs=10"]).train) == [10]
    with pytest.raises(ConfigError, match=r"'attack.epoch' = 5: the training keeps weights only after epochs 10 "
                                          r"\(train.epochs = 10, train.checkpoint_every = 0\)"):
        load_config(None, ["train.epochs=10", "attack.epoch=5"])
    with pytest.raises(ConfigError, match="epochs 4, 8, 10"):
        load_config(None, ["train.epochs=10", "train.checkpoint_every=4", "attack.epoch=6"])
    with pytest.raises(ConfigError, match=r"'attack.epoch' = 12 is after the training's last epoch .* raise train.epochs"):
        load_config(None, ["train.epochs=10", "train.checkpoint_every=4", "attack.epoch=12"])
    with pytest.raises(ConfigError, match="'train.seed'"):
        load_config(None, ["train.seed=-2"])
    # The default training seed leaves the recipe as it was before the key existed.
    from dejavu.config import train_recipe

    assert "seed" not in train_recipe(load_config(None, []).train)
    assert train_recipe(load_config(None, ["train.seed=3"]).train)["seed"] == 3
    assert json.dumps(train_recipe(load_config(None, []).train))  # serialisable
