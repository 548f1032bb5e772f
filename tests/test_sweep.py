"""`dejavu sweep`: a grid of config keys x seeds, one run per point, a CSV, figures and an index page."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dejavu.cli import main
from dejavu.errors import ConfigError
from dejavu.sweep import load_study

ROOT = Path(__file__).resolve().parents[1]
SMOKE_STUDY = ROOT / "configs" / "studies" / "smoke.yaml"


@pytest.mark.slow
def test_smoke_study_runs_every_sweep_kind_sharing_trainings(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", str(SMOKE_STUDY), "--out", str(out)]) == 0
    with open(out / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["sweep"] for row in rows[::2]] == ["epochs", "epochs", "set_size", "set_size", "layer", "layer",
                                                    "invariance", "invariance", "method", "method"]
    assert [row["seed"] for row in rows] == ["0", "1"] * 10
    assert [row["train.vicreg.sim_weight"] for row in rows if row["sweep"] == "invariance"] == ["10", "10", "25", "25"]
    trained = []
    for row in rows:
        point = out / Path(row["report"]).parent
        metrics = json.loads((point / "metrics.json").read_text())
        config = json.loads((point / "config.json").read_text())
        assert config["train"]["seed"] == int(row["seed"]) and config["seed"] == 0  # one split, two trainings
        assert float(row["gap"]) == pytest.approx(metrics["gap"])
        assert float(row["auc"]) == pytest.approx(metrics["roc"]["auc"])
        assert float(row["control_gap"]) == pytest.approx(metrics["control"]["gap"])
        assert (point / "report.html").is_file() and (point / "evaluation.json").is_file()
        for model in ("A", "B"):
            if "adopted_from" not in json.loads((point / "stages" / f"train_{model}.done.json").read_text()):
                trained.append((row["sweep"], row["seed"], model))
    # Per seed: the base recipe (trained by the first epoch point), a=b=15, sim_weight 10, SimCLR; the epoch,
    # layer and remaining points attack those trainings (the epoch sweep its checkpoints).
    assert sorted(trained) == sorted((sweep, seed, model) for sweep in ("epochs", "set_size", "invariance", "method")
                                     for seed in ("0", "1") for model in ("A", "B"))
    epochs = [row for row in rows if row["sweep"] == "epochs"]
    assert [row["attack.epoch"] for row in epochs] == ["2", "2", "4", "4"]
    assert (epochs[0]["target_acc"], epochs[0]["auc"]) != (epochs[2]["target_acc"], epochs[2]["auc"])
    # The summary: mean and sample sd over the seeds of each point, and the verdict counts significant seeds.
    with open(out / "summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 10 and all(entry["seeds"] == "0 1" for entry in summary)
    for entry, pair in zip(summary, zip(rows[::2], rows[1::2])):
        gaps = [float(row["gap"]) for row in pair]
        assert float(entry["gap_mean"]) == pytest.approx(sum(gaps) / 2)
        assert float(entry["gap_sd"]) == pytest.approx(abs(gaps[0] - gaps[1]) / 2 ** 0.5)
        significant = sum(float(row["gap"]) > 0 and float(row["mcnemar_p"]) < float(row["alpha"]) for row in pair)
        assert int(entry["significant_seeds"]) == significant
    index = (out / "index.html").read_text(encoding="utf-8")
    assert all(f'href="{row["report"]}"' in index for row in rows)
    assert "mean ± sd over seeds" in index and "Sweep set_size" in index
    for name in ("epochs_attack_epoch", "set_size_split_a_per_class", "layer_attack_layer",
                 "invariance_train_vicreg_sim_weight", "method_train_method"):
        assert (out / "figures" / f"sweep_{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "figures" / "sweep_set_size_split_b_per_class.png").exists()  # zipped: one figure
    # The compute time kept in sweep.json counts each point's own stages, not the adopted ones.
    recorded = json.loads((out / "sweep.json").read_text())["compute_seconds"]
    assert recorded["total"] == pytest.approx(sum(recorded["points"].values()), abs=0.5)
    shared = recorded["points"]["layer-layer=projector_seed=0"]  # adopted both trainings
    assert 0 < shared < recorded["points"]["epochs-epoch=2_seed=0"]
    # Run again: every point is up to date, the table is the same.
    before = (out / "sweep.csv").read_text()
    assert main(["sweep", "--config", str(SMOKE_STUDY), "--out", str(out)]) == 0
    assert (out / "sweep.csv").read_text() == before
    # Another study cannot write into this folder.
    other = tmp_path / "other.yaml"
    other.write_text(f"config: {ROOT / 'configs' / 'smoke.yaml'}\ngrid: {{attack.k: [5, 10]}}\n")
    assert main(["sweep", "--config", str(other), "--out", str(out)]) == 2
    assert "holds another study" in capsys.readouterr().err


def _study(tmp_path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_points_are_the_grid_product_times_the_seeds(tmp_path):
    path = _study(tmp_path, f"config: {ROOT / 'configs' / 'smoke.yaml'}\noverrides: [seed=3]\n"
                            "grid: {attack.layer: [backbone, projector], attack.k: [5, 10]}\nseeds: 2\n")
    _, points = load_study(path)
    assert len(points) == 2 * 2 * 2
    assert [(p.values["attack.layer"], p.values["attack.k"], p.seed) for p in points[:3]] == [
        ("backbone", 5, 3), ("backbone", 5, 4), ("backbone", 10, 3)]
    assert all(p.config.attack.k == p.values["attack.k"] and p.config.seed == p.seed for p in points)
    assert len({p.name for p in points}) == len(points)


def test_zipped_sweeps_pair_values_and_a_fixed_split_varies_the_training_seed(tmp_path):
    path = _study(tmp_path, f"config: {ROOT / 'configs' / 'smoke.yaml'}\nseeds: 2\nredraw_split: false\n"
                            "sweeps:\n  size: {grid: {split.a_per_class: [5, 8], split.b_per_class: [5, 8]}, zip: true}\n"
                            "  k: {grid: {attack.k: [5, 10]}, overrides: [attack.layer=backbone]}\n")
    resolved, points = load_study(path)
    assert [(p.sweep, p.config.split.a_per_class, p.config.split.b_per_class) for p in points[:4]] == [
        ("size", 5, 5), ("size", 5, 5), ("size", 8, 8), ("size", 8, 8)]
    assert {p.config.seed for p in points} == {0} and [p.config.train.seed for p in points[:2]] == [0, 1]
    assert [p.config.attack.layer for p in points] == ["projector"] * 4 + ["backbone"] * 4
    assert points[4].name == "k-k=5_seed=0" and resolved["sweeps"]["size"]["zip"] is True


def test_a_study_recorded_by_the_first_version_reads_as_the_same_study(tmp_path):
    from dejavu.sweep import _current

    path = _study(tmp_path, f"config: {ROOT / 'configs' / 'smoke.yaml'}\ngrid: {{attack.k: [5, 10]}}\nseeds: 2\n")
    resolved, _ = load_study(path)
    first_version = {"config": resolved["config"], "overrides": [], "grid": {"attack.k": [5, 10]}, "seeds": 2}
    assert _current(first_version) == resolved
    assert _current(resolved) == resolved


def test_verdict_counts_the_seeds_detected_by_their_outcomes():
    from dejavu.metrics.outcomes import seeds_verdict
    from dejavu.sweep import summarise_points

    assert seeds_verdict(["detected", "detected", "inconclusive"]) == (2, "detected in 2 of 3 seeds: not robust")
    assert seeds_verdict(["detected", "detected"]) == (2, "detected in every seed (2/2)")
    assert seeds_verdict(["not_detected", "not_detected"]) == (0, "not detected in any of 2 seeds")
    assert seeds_verdict(["inconclusive"]) == (0, "inconclusive")
    rows = [{"sweep": "s", "attack.k": k, "seed": seed, "gap": gap, "mcnemar_p": p, "alpha": 0.01, "decision": d}
            for k, seed, gap, p, d in ((5, 0, 0.10, 1e-3, "detected"), (5, 1, 0.20, 1e-4, "detected"),
                                       (9, 0, 0.0, 1.0, "inconclusive"))]
    five, nine = summarise_points(rows)
    assert five["attack.k"] == 5 and five["seeds"] == [0, 1] and nine["seeds"] == [0]
    assert five["gap"]["mean"] == pytest.approx(0.15) and five["gap"]["sd"] == pytest.approx(0.0707107, rel=1e-5)
    assert (five["gap"]["min"], five["gap"]["max"]) == (0.10, 0.20) and nine["gap"]["sd"] == 0.0
    assert five["verdict"] == "detected in every seed (2/2)" and nine["verdict"] == "inconclusive"


@pytest.mark.parametrize("text, message", [
    ("grid: {train.no_such_key: [1, 2]}", "unknown config key 'train.no_such_key'"),
    ("grid: {}", "'grid' is empty"),
    ("seeds: 2", "'grid' is empty"),
    ("grid: {attack.k: []}", "needs a non-empty list"),
    ("grid: {attack.k: 5}", "needs a non-empty list"),
    ("grid: {attack.k: [5]}\nseeds: 0", "'seeds' must be an integer >= 1"),
    ("grid: {attack.k: [5]}\nseeds: two", "'seeds' must be an integer >= 1"),
    ("grid: {attack.k: [5]}\nrepeats: 2", "unknown key 'repeats'"),
    ("grid: {attack.k: [0]}", "attack.k"),
    ("grid: {attack.epoch: [5, 15]}", "'attack.epoch' = 5: the training keeps weights only after epochs 1000 "
                                      "(train.epochs = 1000, train.checkpoint_every = 0)"),
    ("overrides: [train.checkpoint_every=5]\ngrid: {attack.epoch: [5, 7]}", "grid point {'attack.epoch': 7}"),
    ("grid: {split.a_per_class: [4, 6], split.b_per_class: [4]}\nzip: true", "as many values"),
    ("grid: {attack.k: [5]}\nsweeps: {k: {grid: {attack.k: [5]}}}", "not both"),
    ("sweeps: {}", "'sweeps' is empty"),
    ("sweeps: {k: {grid: {attack.k: [5]}, seeds: 2}}", "sweep 'k': unknown key 'seeds'"),
    ("sweeps: {k: {grid: {}}}", "sweep 'k': 'grid' is empty"),
    ("grid: {attack.k: [5]}\nredraw_split: maybe", "'redraw_split' must be true or false"),
    ("grid: {seed: [1, 2]}", "'grid' sets 'seed', which the repeats set; use 'seeds: N'"),
    ("sweeps: {s: {grid: {attack.k: [5]}, overrides: [train.seed=3]}}", "sweep 's' sets 'train.seed'"),
    ("overrides: [train.seed=3]\nredraw_split: false\ngrid: {attack.k: [5]}", "'overrides' sets 'train.seed'"),
    ("sweeps: {../up: {grid: {attack.k: [5]}}}", "sweep name '../up' must be letters"),
    ("grid: {attack.k: [5, 5]}", "grid point {'attack.k': 5} appears twice"),
    ("grid: {train.vicreg.sim_weight: [10, 10.0]}", "grid point {'train.vicreg.sim_weight': 10.0} appears twice"),
    ("overrides: [train.no_such=1]\ngrid: {attack.k: [5]}", "study.yaml': unknown config key 'train.no_such'"),
])
def test_bad_studies_are_refused_naming_what_is_wrong(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_study(_study(tmp_path, text))
    assert message in str(error.value)
