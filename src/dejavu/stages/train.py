"""The training stages: the target model on A, the reference model on B, one recipe."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from dejavu.artifacts import load_table, read_split, training_rows
from dejavu.data.sources import image_source
from dejavu.runs import Run
from dejavu.stages.declaration import Stage, fingerprint
from dejavu.train.loop import train_encoder

ROLES = {"A": "target", "B": "reference"}


def stage_train(run: Run, model: str) -> Path:
    """Train the model of set ``model`` (A: target, B: reference) on its set plus the shared set."""
    table = load_table(run)
    split = read_split(run, table)
    sets, canaries, repeats = split.sets, split.canaries, split.canary_repeats
    rows = training_rows(table, sets, model, canaries, repeats)
    c = run.config
    return train_encoder(
        image_source(table, rows, c.data.image_size, c.data.workers), c.train, c.data.input_size, run.seeds["train"],
        run.model_dir(model), data_fingerprint=fingerprint(TRAIN[model], run),
        description=f"train {model} ({ROLES[model]})", labels=table.labels[rows], n_classes=len(table.class_names),
    )


def _training(model: str) -> Stage:
    return Stage(
        f"train_{model}", partial(stage_train, model=model), reads=("data", "split"),
        keys=("train", "data.input_size", "data.image_size"), seeds=("train",), outputs=(f"models/{model}",),
        command="train", every_process=True,
        description="train the target model on A and the reference on B, same recipe and seed (--model A|B: one)",
    )


TRAIN = {model: _training(model) for model in ROLES}
