"""``dejavu sweep``: one study = a base config, a grid of config keys, and seeds; one run folder per point.

A study file::

    config: ../smoke.yaml          # the base config (relative to this file), optional
    overrides: [train.epochs=20]   # dotted overrides applied to every point, optional
    grid:                          # every combination of these values is a point
      train.vicreg.sim_weight: [10, 25]
    seeds: 2                       # each point repeated with seed, seed + 1, ... (data split included)

Each point is an ordinary run folder under ``<out>/points/`` (its own report.html); the sweep writes
``sweep.csv`` (one row per point and seed), ``sweep.json`` (the study, resolved) and ``index.html``
with paper-style figures against the first grid key. A killed sweep resumes: finished points are skipped
by their run folders.

First version (issue 5, in progress): every point trains its own models, even where two points would
share a training (e.g. a grid over ``attack.layer``); epochs are swept by training for each value.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from dejavu.config import Config, load_config
from dejavu.errors import ConfigError
from dejavu.runs import Run, read_json, write_json, write_text

STUDY_KEYS = ("config", "overrides", "grid", "seeds")


@dataclass
class Point:
    values: dict[str, Any]
    seed: int
    name: str
    config: Config


def _format(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _slug(values: dict[str, Any], seed: int) -> str:
    parts = [f"{key.split('.')[-1]}={_format(value)}" for key, value in values.items()] + [f"seed={seed}"]
    text = "_".join(parts)
    return "".join(ch if ch.isalnum() or ch in "=._-" else "-" for ch in text)


def load_study(path: str | Path) -> tuple[dict[str, Any], list[Point]]:
    """Read and validate a study file; every point's config is built (and validated) before any work."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file '{path}' does not exist")
    try:
        study = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"study file '{path}' is not valid YAML: {exc}") from None
    if not isinstance(study, dict):
        raise ConfigError(f"study file '{path}': expected a mapping with keys {', '.join(STUDY_KEYS)}")
    unknown = sorted(set(study) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"study file '{path}': unknown key '{unknown[0]}'; valid: {', '.join(STUDY_KEYS)}")
    grid = study.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"study file '{path}': 'grid' is empty; give at least one key with a list of values, "
                          "e.g. grid: {train.vicreg.sim_weight: [10, 25]}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"study file '{path}': grid key '{key}' needs a non-empty list of values, found {values!r}")
    seeds = study.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"study file '{path}': 'seeds' must be an integer >= 1, found {seeds!r}")
    overrides = study.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(item, str) for item in overrides):
        raise ConfigError(f"study file '{path}': 'overrides' must be a list of KEY=VALUE strings")
    base = (path.parent / study["config"]).resolve() if study.get("config") else None
    base_seed = load_config(base, overrides).seed
    points = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        for repeat in range(seeds):
            seed = base_seed + repeat
            point_overrides = [*overrides, *(f"{key}={json.dumps(value)}" for key, value in values.items()), f"seed={seed}"]
            try:
                config = load_config(base, point_overrides)
            except ConfigError as exc:
                raise ConfigError(f"study file '{path}', grid point {values}: {exc}") from None
            points.append(Point(values, seed, _slug(values, seed), config))
    resolved = {"config": str(base) if base else None, "overrides": overrides, "grid": grid, "seeds": seeds}
    return resolved, points


ROW_KEYS = (
    "target_acc", "reference_acc", "gap", "target_acc_top20", "reference_acc_top20", "dejavu_score_top20",
    "memorized", "correlated", "misrepresented", "unassociated", "mcnemar_p",
)


def point_row(point: Point, run_root: Path) -> dict[str, Any]:
    """One CSV row: the point's values and seed, its attack metrics, AUC, control gap, conventional metrics."""
    metrics = read_json(run_root / "metrics.json")
    row: dict[str, Any] = {**{key: value for key, value in point.values.items()}, "seed": point.seed}
    row.update({key: metrics.get(key) for key in ROW_KEYS})
    low, high = metrics.get("gap_ci95") or (None, None)
    row.update(gap_ci_low=low, gap_ci_high=high, auc=(metrics.get("roc") or {}).get("auc"),
               control_gap=metrics["control"]["gap"], control_p=metrics["control"]["mcnemar_p"])
    evaluation_path = run_root / "evaluation.json"
    if evaluation_path.is_file():
        models = read_json(evaluation_path)["models"]
        for name in ("knn", "linear_probe"):
            for part in ("train", "test", "gap"):
                row[f"A_backbone_{name}_{part}"] = models["A"]["backbone"][name][part]
    row["report"] = str((run_root / "report.html").relative_to(run_root.parent.parent))
    return row


def run_sweep(study_path: str | Path, out: str | Path, log: Callable[[str], None] = print) -> Path:
    """Run (or resume) every point of the study into ``out``; write sweep.csv, sweep.json, index.html."""
    from dejavu.pipeline import run_all, set_threads
    from dejavu.report.sweep import write_sweep_report

    out = Path(out)
    resolved, points = load_study(study_path)
    if (out / "sweep.json").is_file() and read_json(out / "sweep.json")["study"] != resolved:
        raise ConfigError(f"output folder '{out}' holds another study; choose another --out")
    write_json(out / "sweep.json", {"study": resolved, "points": [p.name for p in points]})
    rows = []
    for number, point in enumerate(points, 1):
        log(f"[sweep] point {number}/{len(points)}: {point.name}")
        run = Run(out / "points" / point.name, point.config)
        run.claim()
        set_threads(point.config)
        run_all(run, log=lambda message: None)
        rows.append(point_row(point, run.root))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([["" if row.get(key) is None else _format(row.get(key)) for key in columns] for row in rows])
    write_text(out / "sweep.csv", buffer.getvalue())
    return write_sweep_report(out, resolved, rows)
