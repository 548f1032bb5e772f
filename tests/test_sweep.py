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
def test_smoke_study_runs_every_point_and_tabulates_their_metrics(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", str(SMOKE_STUDY), "--out", str(out)]) == 0
    with open(out / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["train.vicreg.sim_weight"] for row in rows] == ["10", "25"]
    for row in rows:
        point = out / Path(row["report"]).parent
        metrics = json.loads((point / "metrics.json").read_text())
        config = json.loads((point / "config.json").read_text())
        assert config["train"]["vicreg"]["sim_weight"] == float(row["train.vicreg.sim_weight"])
        assert float(row["gap"]) == pytest.approx(metrics["gap"])
        assert float(row["auc"]) == pytest.approx(metrics["roc"]["auc"])
        assert float(row["control_gap"]) == pytest.approx(metrics["control"]["gap"])
        assert (point / "report.html").is_file() and (point / "evaluation.json").is_file()
    index = (out / "index.html").read_text(encoding="utf-8")
    assert all(f'href="{row["report"]}"' in index for row in rows)
    assert (out / "figures" / "sweep_train_vicreg_sim_weight.png").read_bytes()[:4] == b"\x89PNG"
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
])
def test_bad_studies_are_refused_naming_what_is_wrong(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_study(_study(tmp_path, text))
    assert message in str(error.value)
