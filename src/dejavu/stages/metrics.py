"""The metrics stage: votes, accuracies, partition and statistics of both directions and the control."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dejavu.artifacts import (
    CLASSIFIER, CROP_SETS, load_classifier_summary, load_crops, load_neighbours, load_probabilities, load_sanity,
    load_reconstruction_summary, load_reconstructions, load_table, load_vlm_summary, models_of, query_sets_of, read_split,
    write_csv,
)
from dejavu.metrics.tables import attack_tables, one_model_tables, summarise
from dejavu.reconstruct.scoring import reconstruction_metrics
from dejavu.runs import Run, write_json
from dejavu.stages.declaration import WHICH_MODELS, Stage


def stage_metrics(run: Run) -> Path:
    """Per-example tables and pooled statistics: ``samples.csv``, ``control_samples.csv``, ``metrics.json``."""
    table = load_table(run, with_images=False)
    split = read_split(run, table)
    crops = load_crops(run, table)
    kept = {name: crops["id"][(crops["set"] == name) & (crops["kept"] == 1)] for name in CROP_SETS}
    # Each query set's neighbours must be those of exactly its kept crops, k of them, labels naming a class.
    neighbours = {
        (model, name): load_neighbours(run, model, name, ids=kept[name], k=run.config.attack.k,
                                       n_classes=len(table.class_names))
        for model in models_of(run.config) for name in query_sets_of(run.config)
    }
    n_classes = len(table.class_names)
    classifier = None
    if run.config.model.one_model:
        # The reference of the one-model test: the correlation classifier's probabilities of the same crops.
        probabilities = {name: load_probabilities(run, name, ids=kept[name], n_classes=n_classes)
                         for name in query_sets_of(run.config)}
        classifier = load_classifier_summary(run)
        tables = one_model_tables(table, crops, neighbours, probabilities, n_classes, reference_model=CLASSIFIER)
    else:
        tables = attack_tables(table, crops, neighbours, n_classes=n_classes, control_seed=run.seeds["control_split"])
    skipped = {name: int(np.sum((crops["set"] == name) & (crops["kept"] == 0))) for name in CROP_SETS}
    sanity = load_sanity(run)
    # A failed gate keeps the numbers (they help diagnose), but every test's outcome is then "no verdict".
    tests = {"sanity": {"passed": bool(sanity["passed"]), "failures": list(sanity["failures"])},
             "reconstruction": reconstruction_numbers(run, tables) if run.config.reconstruct.enabled else None,
             "vlm": load_vlm_summary(run) if run.config.train.method == "clip" else None}
    metrics = summarise(tables, run.config.metrics, run.seeds["bootstrap"], table.class_names, split.canaries,
                        split.canary_repeats, split_sizes=split.payload["sizes"], crops_skipped=skipped,
                        classifier=classifier, tests=tests)
    for name, columns in (("samples.csv", tables["attack"]), ("control_samples.csv", tables["control"])):
        write_csv(run.root / name, list(columns), list(zip(*columns.values())))
    path = run.root / "metrics.json"
    write_json(path, metrics)
    return path


def reconstruction_numbers(run: Run, tables: dict) -> dict:
    """``metrics.json["reconstruction"]``: the judge's and the colour score's target-vs-reference test of the
    reconstructions (A and B pooled, and the control T), the judge's accuracy on T, the decoders' fidelity."""
    drawn = load_reconstructions(run)
    summary = load_reconstruction_summary(run)
    scores = {name: {key: row[f"{name}_share"] for key, row in drawn.items()} for name in ("judge", "colour")}
    c = run.config.metrics
    out = reconstruction_metrics(tables, scores, c.bootstrap, c.ci_level, run.seeds["bootstrap"])
    out["judge"] = summary.get("judge")
    out["fidelity"] = summary.get("fidelity")
    out["reconstructed"] = summary.get("reconstructed")
    return out


METRICS = Stage(
    "metrics", stage_metrics, reads=("data", "split", "crops", "correlation", "neighbours", "reconstruct", "vlm", "sanity"),
    keys=("metrics", "reconstruct.enabled", "train.method"),
    seeds=("control_split", "bootstrap"),
    also_reads={"attack.k": "checked against the neighbours' files (an edited file with fewer columns would vote "
                            "on fewer neighbours); the neighbours stage's token already carries its value",
                **WHICH_MODELS},
    outputs=("metrics.json", "samples.csv", "control_samples.csv"),
    description="votes, accuracies, deja vu score, partition, McNemar test, bootstrap interval, ROC, negative control",
)
