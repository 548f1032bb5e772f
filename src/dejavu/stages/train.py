"""The training stages: the target model on A, the reference model on B, one recipe."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from dejavu.artifacts import load_table, read_split, training_rows
from dejavu.data.sources import image_source
from dejavu.errors import DataError
from dejavu.models.checkpoint import format_label
from dejavu.models.outside import checkpoint_digest, load_outside
from dejavu.models.text import tokenize
from dejavu.runs import Run, write_json
from dejavu.stages.declaration import Stage, fingerprint
from dejavu.train.loop import train_encoder
from dejavu.train.methods import METHODS

ROLES = {"A": "target", "B": "reference"}


def stage_train(run: Run, model: str) -> Path:
    """Train the model of set ``model`` (A: target, B: reference) on its set plus the shared set; in an
    audit, load its checkpoint instead and record what was loaded (``source.json``)."""
    if run.config.model.audited:
        return import_model(run, model)
    table = load_table(run)
    split = read_split(run, table)
    sets, canaries, repeats = split.sets, split.canaries, split.canary_repeats
    rows = training_rows(table, sets, model, canaries, repeats)
    c = run.config
    labels = table.labels[rows]
    if METHODS[c.train.method].needs_captions:
        if table.captions is None:
            raise DataError(f"config key 'train.method' = {c.train.method} trains on image-caption pairs, but "
                            f"'{run.data_dir / 'catalog.npz'}' holds no captions: give the manifest a 'caption' column")
        labels = tokenize(table.captions[rows], c.train.clip.context_length)
    return train_encoder(
        image_source(table, rows, c.data.image_size, c.data.workers), c.train, c.data.input_size, run.seeds["train"],
        run.model_dir(model), data_fingerprint=fingerprint(TRAIN[model], run),
        description=f"train {model} ({ROLES[model]})", labels=labels, n_classes=len(table.class_names),
    )


def import_model(run: Run, model: str) -> Path:
    """An audited model's checkpoint loaded and checked (format, keys, shapes, the side it takes, the
    attacked layer) before any embedding, and described in ``models/<model>/source.json``: the file's path,
    size and SHA-256, where its weights were and which keys were dropped."""
    loaded = load_outside(run.config, model)
    path = run.model_dir(model) / "source.json"
    write_json(path, loaded.source)
    print(f"[train_{model}] {ROLES[model]}: {loaded.source['arch']} from {loaded.source['path']} "
          f"({format_label(loaded.source['format'])}); embeds at {', '.join(f'{k} ({v})' for k, v in loaded.source['widths'].items())}")
    return path


def _checkpoint(model: str):
    def external(config) -> dict[str, str]:
        where = config.model.target if model == "A" else config.model.reference
        return {"checkpoint_sha256": checkpoint_digest(where)} if where else {}
    return external


def _training(model: str) -> Stage:
    return Stage(
        f"train_{model}", partial(stage_train, model=model), reads=("data", "split"),
        keys=("train", "data.input_size", "data.image_size", "model"), seeds=("train",), outputs=(f"models/{model}",),
        command="train", every_process=True, external=_checkpoint(model),
        # The one-model test has no reference model: the correlation stage stands in for it.
        applies=None if model == "A" else (lambda config: not config.model.one_model),
        unneeded="" if model == "A" else "the one-model test: no reference model",
        description="train the target on A and the reference on B, one recipe and seed (--model A|B: one); "
                    "audit: load them",
    )


TRAIN = {model: _training(model) for model in ROLES}
