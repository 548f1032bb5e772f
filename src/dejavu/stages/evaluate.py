"""The evaluate stage: the conventional metrics (kNN accuracy, linear probe), blind to memorization."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dejavu.artifacts import load_split, load_table, models_of, own_rows
from dejavu.attack.embed import embed_batches
from dejavu.data.augment import eval_images
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.data.sources import image_source
from dejavu.evaluate.conventional import NOTE, LayerStack, conventional_metrics, evaluation_layers
from dejavu.metrics.schema import evaluation_payload
from dejavu.runs import Run, write_json
from dejavu.models.outside import input_side
from dejavu.stages.attack import ENCODER_KEYS, SPEED_KEYS, batch_chunks, load_encoders
from dejavu.stages.declaration import Stage
from dejavu import distributed


class FullImages:
    """Embeds full images of the table at every evaluated layer, one forward pass per batch."""

    def __init__(self, run: Run, table: ImageTable, stacks: dict[str, LayerStack]):
        self.run, self.table, self.stacks = run, table, stacks
        self.device = distributed.device()

    def embed(self, models: tuple[str, ...], rows: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """{model: {layer: (N, D)}} of the full images at ``rows``."""
        c = self.run.config
        source = image_source(self.table, rows, c.data.image_size, c.data.workers)
        chunks = batch_chunks(len(rows), c.attack.batch_size)
        side = input_side(c)
        stacked = embed_batches({model: self.stacks[model] for model in models},
                                (eval_images(images, side) for images in source.batches(chunks)),
                                self.stacks[models[0]].key, self.device)
        return {model: self.stacks[model].split(stacked[model]) for model in models}


def stage_evaluate(run: Run) -> Path:
    """Conventional metrics of each model on full images, at the backbone and the attack's layer:
    kNN accuracy (database X) and a linear probe (fitted on the model's own training set), each on the
    model's training images ("train") and on T ("test"), in ``evaluation.json``.

    A model's training set is the one it trained on (its set plus the shared set). Each batch is read
    once and embedded at every layer in one forward pass."""
    table = load_table(run)
    sets = load_split(run, table)
    c = run.config
    layers = evaluation_layers(c.attack.layer)
    images = FullImages(run, table, {model: LayerStack(encoder, layers) for model, encoder in load_encoders(run).items()})
    public_rows = index_of_ids(table.ids, sets["X"], "split set X")
    test_rows = index_of_ids(table.ids, sets["T"], "split set T")
    embedded = models_of(c)
    public, test = images.embed(embedded, public_rows), images.embed(embedded, test_rows)
    k = min(c.evaluate.knn_k, len(public_rows))
    models, sizes = {}, {"X": len(public_rows), "T": len(test_rows)}
    for model in embedded:
        train_rows = own_rows(table, sets, model)
        sizes[model] = len(train_rows)
        train = images.embed((model,), train_rows)[model]
        models[model] = {
            layer: conventional_metrics(
                public[model][layer], table.labels[public_rows], train[layer], table.labels[train_rows],
                test[model][layer], table.labels[test_rows], n_classes=len(table.class_names), k=k,
                probe_epochs=c.evaluate.probe_epochs, backend=c.attack.backend, seed=run.seeds["train"],
                device=images.device,
            )
            for layer in layers
        }
    path = run.root / "evaluation.json"
    write_json(path, evaluation_payload(k=k, attack_layer=c.attack.layer, layers=layers, sizes=sizes,
                                        models=models, note=NOTE))
    return path


EVALUATE = Stage(
    "evaluate", stage_evaluate, reads=("data", "split", "train_A", "train_B"),
    keys=("attack.layer", "attack.backend", "evaluate", *ENCODER_KEYS), seeds=("train",),
    also_reads=SPEED_KEYS, outputs=("evaluation.json",),
    description="the models' conventional metrics: kNN accuracy and a linear probe, on T and on their training images",
)
