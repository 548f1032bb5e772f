"""The sanity stage: both models and the data checked fit for a verdict (``sanity.json``).

The metrics stage reads its outcome: when a check fails, the run's verdict is replaced by the reasons
(see :mod:`dejavu.metrics.sanity` for what is checked and why)."""

from __future__ import annotations

from pathlib import Path

from dejavu.artifacts import load_classifier_summary, load_embeddings, load_history, load_source, load_split, load_table, models_of
from dejavu.data.records import index_of_ids
from dejavu.metrics.sanity import (
    NO_HISTORY, accuracy_check, class_checks, classifier_checks, embedding_checks, loss_checks, summary, weights_check,
)
from dejavu.metrics.schema import read_evaluation
from dejavu.runs import Run, write_json
from dejavu.stages.declaration import Stage


def stage_sanity(run: Run) -> Path:
    """Loss, embeddings and accuracy of each model, classes of each set, in ``sanity.json``."""
    c = run.config
    table = load_table(run, with_images=False)
    sets = load_split(run, table)
    labels = {name: table.labels[index_of_ids(table.ids, sets[name], f"split set {name}")] for name in ("A", "B", "X", "T")}
    checks = class_checks(labels)
    evaluation = read_evaluation(run.root / "evaluation.json")
    layer = evaluation.attack_layer
    skipped = []
    for model in models_of(c):
        if c.model.audited:
            # An outside checkpoint brings no loss history: its weights, embeddings and accuracy are judged.
            checks.append(weights_check(load_source(run, model), model))
            skipped.append(f"model {model}: {NO_HISTORY}")
        else:
            history = load_history(run, model)["loss"]
            # The audited weights are those after attack.epoch (0: the last): judge the training up to there.
            checks += loss_checks(history[: c.attack.epoch or None], model, c.train.method)
        public = load_embeddings(run, model, "public_X", ids=sets["X"])["embeddings"]
        checks += embedding_checks(public, model, f"X's embeddings at {layer}")
        scores = evaluation.models[model][layer]
        best, how = max((scores.knn.test, "kNN"), (scores.linear_probe.test, "linear probe"))
        checks.append(accuracy_check(best, labels["T"], model, f"{how} accuracy at {layer}"))
    if c.model.one_model:
        checks += classifier_checks(load_classifier_summary(run))
    path = run.root / "sanity.json"
    write_json(path, summary(checks, skipped))
    return path


SANITY = Stage(
    "sanity", stage_sanity, reads=("data", "split", "train_A", "train_B", "correlation", "embed", "evaluate"),
    keys=("train.method", "attack.epoch", "model"), outputs=("sanity.json",),
    description="the gates a verdict needs: losses finite and falling, embeddings not collapsed, accuracy above chance",
)
