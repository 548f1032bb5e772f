"""``dejavu sweep``: one study = a base config, one or more grids of config keys, and seeds.

A study file with one grid::

    config: ../smoke.yaml          # the base config (relative to this file, or a shipped name: smoke), optional
    overrides: [train.epochs=20]   # dotted overrides applied to every point, optional
    grid:                          # every combination of these values is a point
      train.vicreg.sim_weight: [10, 25]
    seeds: 2                       # each point repeated over seeds (see redraw_split)
    redraw_split: true             # true: seed, seed + 1, ... (data, split and training re-drawn);
                                   # false: one data split, train.seed = seed, seed + 1, ... (training only)

or with named grids, each drawn as its own figure (``configs/studies/paper_findings.yaml``)::

    sweeps:
      epochs: {grid: {attack.epoch: [100, 250, 1000]}}
      set_size: {grid: {split.a_per_class: [10, 20], split.b_per_class: [10, 20]}, zip: true}
      layer: {grid: {attack.layer: [backbone, projector]}, overrides: [attack.k=50]}

``zip: true`` pairs the keys' values (the i-th values form the i-th point) instead of combining them.

Each point is an ordinary run folder under ``<out>/points/`` (its own report.html). Before a point runs
it adopts every stage another point already finished with the same fingerprint (:mod:`dejavu.stages.reuse`):
points that differ only downstream of training (``attack.epoch``, ``attack.layer``, ``attack.k``, crops,
metrics) share one training, and an epoch sweep attacks the checkpoints of one run. The sweep writes
``sweep.csv`` (one row per point and seed), ``summary.csv`` (one row per point: mean ± spread over seeds
and the verdict), ``sweep.json`` and ``index.html``. A killed sweep resumes: finished points are skipped.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from dejavu.artifacts import write_csv
from dejavu.config import Config, load_config, resolve_config
from dejavu.errors import ConfigError
from dejavu.metrics.schema import (
    CONVENTIONAL_PARTS, SPREAD_METRICS, SWEEP_METRICS, MetricsFile, read_evaluation, read_metrics,
)
from dejavu.metrics.stats import as_float
from dejavu.metrics.outcomes import Outcome, seeds_verdict
from dejavu.metrics.vlm_schema import Vlm
from dejavu.report.format import format_value
from dejavu.report.sweep import write_sweep_report
from dejavu.runs import Run, folder_lock, read_json, write_json
from dejavu.stages import adopt_stages, run_all, set_threads
from dejavu import distributed

STUDY_KEYS = ("config", "overrides", "grid", "zip", "sweeps", "seeds", "redraw_split")
SWEEP_KEYS = ("grid", "zip", "overrides")
SINGLE = "grid"  # the name of the one sweep of a study written with a top-level grid


@dataclass
class Point:
    sweep: str
    values: dict[str, Any]
    seed: int  # the seed that varies over repeats: the run's seed, or train.seed with a fixed split
    name: str
    config: Config


def _slug(values: dict[str, Any], seed: int) -> str:
    parts = [f"{key.split('.')[-1]}={format_value(value)}" for key, value in values.items()] + [f"seed={seed}"]
    text = "_".join(parts)
    return "".join(ch if ch.isalnum() or ch in "=._-" else "-" for ch in text)


def _override_key(item: str) -> str:
    return item.split("=", 1)[0].strip()


def _overrides(where: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: 'overrides' must be a list of KEY=VALUE strings")
    return value


def _combinations(where: str, grid: Any, zipped: Any) -> list[dict[str, Any]]:
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{where}: 'grid' is empty; give at least one key with a list of values, "
                          "e.g. grid: {train.vicreg.sim_weight: [10, 25]} (or named grids under 'sweeps')")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid key '{key}' needs a non-empty list of values, found {values!r}")
    if not isinstance(zipped or False, bool):
        raise ConfigError(f"{where}: 'zip' must be true or false, found {zipped!r}")
    if zipped:
        lengths = {key: len(values) for key, values in grid.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"{where}: with zip: true every grid key needs as many values; found {lengths}")
        return [dict(zip(grid, combination)) for combination in zip(*grid.values())]
    return [dict(zip(grid, combination)) for combination in itertools.product(*grid.values())]


def _read_study(path: Path) -> tuple[dict[str, Any], str]:
    """The study file's mapping (top-level keys checked) and how errors name it."""
    if not path.is_file():
        raise ConfigError(f"study file '{path}' does not exist")
    try:
        study = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"study file '{path}' is not valid YAML: {exc}") from None
    where = f"study file '{path}'"
    if not isinstance(study, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(STUDY_KEYS)}")
    unknown = sorted(set(study) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; valid: {', '.join(STUDY_KEYS)}")
    return study, where


def _study_sweeps(study: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """The named sweeps (a top-level grid: one sweep named :data:`SINGLE`), their keys checked."""
    if "sweeps" in study and ("grid" in study or "zip" in study):
        raise ConfigError(f"{where}: give either 'grid' (and 'zip') for one sweep or 'sweeps' (named grids, each "
                          "with its own 'zip'), not both")
    if "sweeps" not in study:
        return {SINGLE: {"grid": study.get("grid"), "zip": study.get("zip", False)}}
    sweeps = study["sweeps"]
    if not isinstance(sweeps, dict) or not sweeps:
        raise ConfigError(f"{where}: 'sweeps' is empty; give named grids, e.g. sweeps: {{layer: {{grid: "
                          "{attack.layer: [backbone, projector]}}}}")
    for name, sweep in sweeps.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ConfigError(f"{where}: sweep name {name!r} must be letters, digits, '_' or '-' (it names folders)")
        if not isinstance(sweep, dict):
            raise ConfigError(f"{where}, sweep '{name}': expected a mapping with keys {', '.join(SWEEP_KEYS)}")
        bad = sorted(set(sweep) - set(SWEEP_KEYS))
        if bad:
            raise ConfigError(f"{where}, sweep '{name}': unknown key '{bad[0]}'; valid: {', '.join(SWEEP_KEYS)}")
    return sweeps


def _check_repeat_keys(study: dict[str, Any], sweeps: dict[str, dict[str, Any]], overrides: list[str],
                       redraw: bool, where: str) -> None:
    """The keys the repeats set are theirs alone: a grid or sweep override of them would be silently replaced.
    (The study's own `overrides` may set `seed`: the repeats count from it.)"""
    for sweep_name, sweep in sweeps.items():
        for key in [*(sweep.get("grid") or {}), *map(_override_key, sweep.get("overrides") or [])]:
            if key in ("seed", "train.seed"):
                which = f"sweep '{sweep_name}'" if "sweeps" in study else "'grid'"
                raise ConfigError(f"{where}: {which} sets '{key}', which the repeats set; use 'seeds: N' "
                                  "(and 'redraw_split') instead")
    if not redraw and any(_override_key(item) == "train.seed" for item in overrides):
        raise ConfigError(f"{where}: 'overrides' sets 'train.seed', which the repeats set (redraw_split: false); "
                          "set 'seed' to move the repeats instead")


def _sweep_points(points: list[Point], sweep_name: str, combinations: list[dict[str, Any]], point_overrides: list[str],
                  base: Path | None, base_seed: int, seeds: int, redraw: bool, single: bool, where: str) -> None:
    """Append one sweep's points (every combination x seed) to ``points``, each config built and validated."""
    for values in combinations:
        for repeat in range(seeds):
            seed = base_seed + repeat
            varied = f"seed={seed}" if redraw else f"train.seed={seed}"
            overrides = [*point_overrides, *(f"{key}={json.dumps(value)}" for key, value in values.items()), varied]
            try:
                config = load_config(base, overrides)
            except ConfigError as exc:
                raise ConfigError(f"{where}, grid point {values}: {exc}") from None
            slug = _slug(values, seed)
            name = slug if single else f"{sweep_name}-{slug}"
            # Equal configs in one sweep are one point listed twice (also 10 and 10.0).
            twin = next((p for p in points if p.name == name or (p.sweep == sweep_name and p.seed == seed
                                                                  and p.config == config)), None)
            if twin is not None:
                raise ConfigError(f"{where}: grid point {values} appears twice (as {twin.values}); "
                                  "list each value once")
            points.append(Point(sweep_name, values, seed, name, config))


def _base_config(study_path: Path, value: Any) -> Path:
    """A study's ``config:``: a path relative to the study's file, else a shipped config's name (so a
    study copied out of the package can still say ``config: smoke``)."""
    relative = study_path.parent / str(value)
    if relative.exists():
        return relative.resolve()
    try:
        return resolve_config(str(value)).resolve()
    except ConfigError as exc:
        raise ConfigError(f"study '{study_path}', key 'config' (relative to the study's folder): {exc}") from None


def load_study(path: str | Path) -> tuple[dict[str, Any], list[Point]]:
    """Read and validate a study file; every point's config is built (and validated) before any work."""
    path = Path(path)
    study, where = _read_study(path)
    sweeps = _study_sweeps(study, where)
    seeds = study.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"{where}: 'seeds' must be an integer >= 1, found {seeds!r}")
    redraw = study.get("redraw_split", True)
    if not isinstance(redraw, bool):
        raise ConfigError(f"{where}: 'redraw_split' must be true or false, found {redraw!r}")
    overrides = _overrides(where, study.get("overrides"))
    _check_repeat_keys(study, sweeps, overrides, redraw, where)
    base = _base_config(path, study["config"]) if study.get("config") else None
    try:
        base_seed = load_config(base, overrides).seed
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    points: list[Point] = []
    resolved_sweeps = {}
    for sweep_name, sweep in sweeps.items():
        sweep_where = where if "sweeps" not in study else f"{where}, sweep '{sweep_name}'"
        combinations = _combinations(sweep_where, sweep.get("grid"), sweep.get("zip", False))
        sweep_overrides = _overrides(sweep_where, sweep.get("overrides"))
        resolved_sweeps[sweep_name] = {"grid": sweep["grid"], "zip": bool(sweep.get("zip", False)),
                                       "overrides": sweep_overrides}
        _sweep_points(points, sweep_name, combinations, [*overrides, *sweep_overrides], base, base_seed, seeds,
                      redraw, len(sweeps) == 1, sweep_where)
    resolved = {"config": str(base) if base else None, "overrides": overrides, "sweeps": resolved_sweeps,
                "seeds": seeds, "redraw_split": redraw}
    return resolved, points


# sweep.csv's columns after the point's sweep, grid values and seed, all from the schema: metrics.json's
# per-point numbers (ROW_KEYS: the fields marked `sweep`), the ones derived from it, the alpha, the
# conventional metrics of model A (evaluation.json's numbers at the backbone and the attacked layer), the report.
ROW_KEYS = SWEEP_METRICS
DERIVED: tuple[tuple[str, Callable[[MetricsFile], Any]], ...] = (
    ("gap_ci_low", lambda m: m.gap_ci95[0]),
    ("gap_ci_high", lambda m: m.gap_ci95[1]),
    ("auc", lambda m: m.roc.auc if m.roc is not None else None),  # None: a run from before the ROC
    ("control_gap", lambda m: m.control.gap),
    ("control_p", lambda m: m.control.mcnemar_p),
    ("sanity", lambda m: "unchecked" if m.sanity is None else "passed" if m.sanity.passed else "failed"),
    # The image test's outcome (two-model or one-model): what the point's verdict counts.
    ("decision", lambda m: image_outcome(m).decision),
)
# A CLIP run's vision-language test (metrics.json["vlm"]), beside the image test's columns; with a text-only
# reference also the gaps beyond the control's (VLM_EXCESS_COLUMNS, empty for a two-model run), which are what
# its verdict judges. Kept out of VLM_COLUMNS, from which SUMMARY_METRICS (a recorded list) is drawn.
VLM_COLUMNS = ("vlm_ppg", "vlm_ppg_p", "vlm_prg", "vlm_prg_p", "vlm_recall_gap_auc", "vlm_control_ppg", "vlm_control_prg")
GAP_FIELDS = ("ppg", "ppg_p", "prg", "prg_p")
VLM_EXCESS_COLUMNS = tuple(f"vlm_excess_{name}" for name in GAP_FIELDS)
LAYERS = ("backbone", "attacked")
CONVENTIONAL = tuple(f"{layer}_{metric}_{part}" for layer in LAYERS for metric, part in CONVENTIONAL_PARTS)


def image_outcome(metrics: MetricsFile) -> Outcome:
    """The image test's outcome of a run: the one-model test's when it ran, else the two-model test's."""
    return metrics.outcomes.get("one_model") or metrics.outcomes["image"]


def vlm_columns(vlm: Vlm, outcome: Outcome) -> dict[str, Any]:
    """A CLIP run's vlm_* cells: its pooled gaps, recall-gap AUC and control; the excess over the control
    (None, an empty cell, for a two-model run); its ``outcome``'s decision."""
    cells = dict(zip(VLM_COLUMNS, (vlm.ppg, vlm.ppg_p, vlm.prg, vlm.prg_p, vlm.recall_gap_auc, vlm.control.ppg,
                                   vlm.control.prg)))
    excess = vlm.excess
    cells.update({column: None if excess is None else getattr(excess, name)
                  for column, name in zip(VLM_EXCESS_COLUMNS, GAP_FIELDS)})
    cells["vlm_decision"] = outcome.decision
    return cells


def point_row(point: Point, run_root: Path) -> dict[str, Any]:
    """One CSV row: the point's values and seed, its attack metrics, AUC, control gap, conventional metrics
    of the target model A (at the backbone and at the attacked layer)."""
    metrics = read_metrics(run_root / "metrics.json")
    row: dict[str, Any] = {"sweep": point.sweep, **point.values, "seed": point.seed}
    row.update({key: getattr(metrics, key) for key in ROW_KEYS})
    row.update({name: value(metrics) for name, value in DERIVED})
    row["alpha"] = point.config.metrics.alpha
    if metrics.vlm is not None:
        row.update(vlm_columns(metrics.vlm, metrics.outcomes["vlm"]))
    evaluation_path = run_root / "evaluation.json"
    if evaluation_path.is_file():
        evaluation = read_evaluation(evaluation_path)
        model = evaluation.models["A"]
        for name, layer in zip(LAYERS, ("backbone", evaluation.attack_layer)):
            for metric, part in CONVENTIONAL_PARTS:
                row[f"{name}_{metric}_{part}"] = getattr(getattr(model[layer], metric), part)
    row["report"] = str((run_root / "report.html").relative_to(run_root.parent.parent))
    return row


def vlm_detected(row: Mapping[str, Any]) -> bool:
    """Whether a CLIP row's vision-language outcome is ``detected``."""
    return row.get("vlm_decision") == "detected"


SUMMARY_METRICS = (*SPREAD_METRICS, "auc", "control_gap", *(c for c in VLM_COLUMNS if not c.endswith("_p")),
                   *CONVENTIONAL)
# Summarised for CLIP points too (no mean: a two-model run's empty cells).
SUMMARY_EXCESS = tuple(c for c in VLM_EXCESS_COLUMNS if not c.endswith("_p"))


def _spread(values: Sequence[float]) -> dict[str, float]:
    data = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not len(data):  # None, not NaN: sweep.json stays strict JSON
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {"mean": float(data.mean()), "sd": float(data.std(ddof=1)) if len(data) > 1 else 0.0,
            "min": float(data.min()), "max": float(data.max())}


# Row fields that are results, not the point's grid values.
_NOT_VALUES = {"sweep", "seed", *ROW_KEYS, *(name for name, _ in DERIVED), "alpha", *CONVENTIONAL, *VLM_COLUMNS,
               *VLM_EXCESS_COLUMNS, "vlm_decision", "report"}


def summarise_points(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per point (sweep + grid values): mean, sd, min, max over its seeds, and the verdict."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        key = json.dumps([row["sweep"], {k: v for k, v in row.items() if k not in _NOT_VALUES}], default=str)
        groups.setdefault(key, []).append(row)
    summary = []
    for members in groups.values():
        first = members[0]
        entry: dict[str, Any] = {k: v for k, v in first.items() if k not in _NOT_VALUES or k == "sweep"}
        entry["seeds"] = [row["seed"] for row in members]
        for metric in (*SUMMARY_METRICS, *SUMMARY_EXCESS):
            if any(metric in row for row in members):
                entry[metric] = _spread([as_float(row.get(metric)) for row in members])
        # Counted from each seed's outcome (dejavu.metrics.outcomes): the point's verdict is the seeds'.
        entry["significant_seeds"], entry["verdict"] = seeds_verdict([str(row["decision"]) for row in members])
        if "vlm_ppg" in first:  # seeds whose vision-language outcome is "detected"
            entry["vlm_significant_seeds"] = sum(vlm_detected(row) for row in members)
        summary.append(entry)
    return summary


def _write_table(path: Path, rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> None:
    """Rows as a CSV file; columns in ``first``'s order, then as they appear (a key a row lacks: empty)."""
    columns = list(dict.fromkeys([*first, *(key for row in rows for key in row)]))
    write_csv(path, columns, [["" if row.get(key) is None else format_value(row.get(key)) for key in columns]
                              for row in rows])


def _flat(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A summary entry as one CSV row: metric_mean, metric_sd, metric_min, metric_max."""
    flat: dict[str, Any] = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{stat}": number for stat, number in value.items()})
        elif isinstance(value, list):
            flat[key] = " ".join(map(str, value))
        else:
            flat[key] = value
    return flat


def _current(study: dict[str, Any]) -> dict[str, Any]:
    """A study as the first version of dejavu sweep recorded it (one top-level grid) in today's form."""
    if "sweeps" in study:
        return study
    return {"config": study.get("config"), "overrides": study.get("overrides", []),
            "sweeps": {SINGLE: {"grid": study.get("grid"), "zip": False, "overrides": []}},
            "seeds": study.get("seeds", 1), "redraw_split": True}


def run_sweep(study_path: str | Path, out: str | Path, log: Callable[[str], None] = print) -> Path:
    """Run (or resume) every point of the study into ``out``; write the tables and index.html.

    Distributed (torchrun): every process trains each point's models; rank zero claims folders, adopts
    shared stages, runs the other stages and writes the tables (the others wait, and fail with it)."""
    out = Path(out)
    resolved, points = load_study(study_path)
    for point in points:  # a batch the processes cannot split stops the study before any work
        distributed.local_batch(point.config.train.batch_size)
    runs = [Run(out / "points" / point.name, point.config) for point in points]

    def begin() -> None:
        if (out / "sweep.json").is_file() and _current(read_json(out / "sweep.json")["study"]) != resolved:
            raise ConfigError(f"output folder '{out}' holds another study; choose another --out")
        write_json(out / "sweep.json", {"study": resolved, "points": [p.name for p in points]})

    def prepare(run: Run) -> None:
        run.claim()
        adopt_stages(run, [r for r in runs if (r.root / "config.json").is_file()], log=log)

    distributed.on_rank_zero(begin, "starting the sweep")
    rows, seconds = [], {}
    start = time.perf_counter()
    for number, (point, run) in enumerate(zip(points, runs), 1):
        elapsed = time.perf_counter() - start
        if distributed.is_main():
            log(f"[sweep] point {number}/{len(points)} ({elapsed / 60:.1f} min so far): {point.name}")
        # A point's folder is locked while it runs: a `dejavu run --out` on it meanwhile is refused.
        with folder_lock(run.root, "dejavu sweep") if distributed.is_main() else contextlib.nullcontext():
            distributed.on_rank_zero(lambda: prepare(run), f"preparing point {point.name}")
            set_threads(point.config)
            began = time.perf_counter()
            run_all(run, log=lambda message: None)
        seconds[point.name] = round(time.perf_counter() - began, 1)
        if distributed.is_main():
            rows.append(point_row(point, run.root))
    return distributed.on_rank_zero(lambda: _finish(out, resolved, points, rows, seconds, start, log),
                                    "writing the sweep's tables") or out / "index.html"


def _computed_seconds(root: Path) -> float:
    total = 0.0
    for marker in sorted((root / "stages").glob("*.done.json")):
        payload = read_json(marker)
        if not payload.get("adopted_from"):
            total += float(payload.get("seconds") or 0.0)
    return total


def _finish(out: Path, resolved: dict[str, Any], points: list[Point], rows: list[dict[str, Any]],
            seconds: dict[str, float], start: float, log: Callable[[str], None]) -> Path:
    summary = summarise_points(rows)
    keys = ["sweep", *dict.fromkeys(key for sweep in resolved["sweeps"].values() for key in sweep["grid"])]
    _write_table(out / "sweep.csv", rows, [*keys, "seed"])
    _write_table(out / "summary.csv", [_flat(entry) for entry in summary], [*keys, "seeds"])
    # Time spent computing each point's own stages (from their markers; adopted ones excluded): unlike the
    # wall time of this call, it survives resuming and re-running the study.
    computed = {point.name: round(_computed_seconds(out / "points" / point.name), 1) for point in points}
    write_json(out / "sweep.json", {"study": resolved, "points": [p.name for p in points],
                                    "compute_seconds": {"total": round(sum(computed.values()), 1), "points": computed},
                                    "seconds_this_call": seconds, "summary": summary})
    log(f"[sweep] {len(points)} points in {(time.perf_counter() - start) / 60:.1f} min")
    return write_sweep_report(out, resolved, rows, summary)
