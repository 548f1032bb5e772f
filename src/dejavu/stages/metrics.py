"""The metrics stage: votes, accuracies, partition and statistics of both directions and the control."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dejavu.artifacts import CROP_SETS, MODELS, load_canaries, load_crops, load_table, write_csv
from dejavu.metrics.sanity import no_verdict
from dejavu.metrics.tables import attack_tables, summarise
from dejavu.runs import Run, load_npz, read_json, write_json
from dejavu.stages.declaration import Stage


def stage_metrics(run: Run) -> Path:
    """Per-example tables and pooled statistics: ``samples.csv``, ``control_samples.csv``, ``metrics.json``."""
    table = load_table(run, with_images=False)
    neighbours = {
        (model, name): load_npz(run.neighbours_dir / f"model_{model}" / f"crops_{name}.npz")
        for model in MODELS for name in CROP_SETS
    }
    crops = load_crops(run)
    tables = attack_tables(table, crops, neighbours, n_classes=len(table.class_names),
                           control_seed=run.seeds["control_split"])
    canaries, repeats = load_canaries(run)
    skipped = {name: int(np.sum((crops["set"] == name) & (crops["kept"] == 0))) for name in CROP_SETS}
    metrics = summarise(tables, run.config.metrics, run.seeds["bootstrap"], table.class_names, canaries, repeats,
                        split_sizes=read_json(run.data_dir / "split.json")["sizes"], crops_skipped=skipped)
    sanity = read_json(run.root / "sanity.json")
    metrics["sanity"] = {"passed": bool(sanity["passed"]), "failures": list(sanity["failures"])}
    if not sanity["passed"]:
        # The numbers stay (they help diagnose), but a failed gate means they are not a verdict.
        metrics["verdict"] = no_verdict(sanity["failures"])
    for name, columns in (("samples.csv", tables["attack"]), ("control_samples.csv", tables["control"])):
        write_csv(run.root / name, list(columns), list(zip(*columns.values())))
    path = run.root / "metrics.json"
    write_json(path, metrics)
    return path


METRICS = Stage(
    "metrics", stage_metrics, reads=("data", "split", "crops", "neighbours", "sanity"), keys=("metrics",), seeds=("control_split", "bootstrap"),
    outputs=("metrics.json", "samples.csv", "control_samples.csv"),
)
