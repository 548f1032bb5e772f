"""The one-model test's reference: a correlation classifier (Kokhlikyan et al., NeurIPS 2024).

An audit of a target alone (``dejavu audit --target A.pth`` without ``--reference``) has no model trained
on B to say what the background reveals by correlation alone. A classifier trained with labels on the
periphery crops of B and X (images the target never trained on) says it instead; it predicts the crops of
A (attacked) and of T (the control), neither of which it saw, so no crop is scored by a classifier that
trained on it and no cross-fitting is needed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from dejavu.artifacts import CLASSIFIER, kept_crops, load_split, load_table
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.data.sources import crop_batches
from dejavu.errors import DataError
from dejavu.evaluate.correlation import (
    ClassifierSettings, calibration, fit_correlation_classifier, predict_probabilities,
)
from dejavu.runs import Run, save_npz, write_json
from dejavu.stages.data import crop_of
from dejavu.stages.declaration import Stage
from dejavu.train.checkpoints import save_weights

ATTACKED = ("A", "T")  # the crops it predicts: the attacked set and the control


def public_crops(table: ImageTable, ids: np.ndarray, crop_config) -> tuple[np.ndarray, np.ndarray]:
    """Ids and int (N, 4) squares of the images ``ids`` (X's) that have a kept crop, as the crops stage cuts
    A's: an image without a box is skipped (its "crop" would show the object, and teach the classifier it)."""
    kept_ids, squares = [], []
    for position in index_of_ids(table.ids, ids, "split set X"):
        crop = crop_of(table, int(position), crop_config)
        if crop.square is not None:
            kept_ids.append(str(table.ids[position]))
            squares.append(crop.square)
    return np.array(kept_ids, dtype=table.ids.dtype), np.array(squares, dtype=np.int64).reshape(-1, 4)


def _crops(run: Run, table: ImageTable, ids: np.ndarray, squares: np.ndarray) -> torch.Tensor:
    c = run.config
    rows = index_of_ids(table.ids, ids, "crops of the classifier")
    batches = list(crop_batches(table, rows, squares, c.data.input_size, c.attack.batch_size, c.data.workers))
    side = c.data.input_size
    return torch.cat(batches) if batches else torch.zeros((0, 3, side, side))


def stage_correlation(run: Run) -> Path:
    """Train the classifier on the kept crops of B and X, then write its temperature-scaled probabilities for
    the crops of A and T, its weights, the ids it trained on (``training_ids.npz``), and how well calibrated it
    is on T (``classifier.json``)."""
    c = run.config
    table = load_table(run)
    sets = load_split(run, table)
    n_classes = len(table.class_names)
    b_ids, b_squares = kept_crops(run, "B", table)
    x_ids, x_squares = public_crops(table, sets["X"], c.crop)
    train_ids = np.concatenate([b_ids, x_ids])
    labels = table.labels[index_of_ids(table.ids, train_ids, "crops of B and X")]
    if len(np.unique(labels)) < 2:
        raise DataError(f"the correlation classifier has {len(train_ids)} crops of B and X to learn from, of "
                        f"{len(np.unique(labels))} class: it needs two or more; raise split.x_per_class")
    train = _crops(run, table, train_ids, np.concatenate([b_squares, x_squares]))
    settings = ClassifierSettings(**dataclasses.asdict(c.correlation))
    folder = run.model_dir(CLASSIFIER)
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "resume.pt"
    model = fit_correlation_classifier(train, labels, n_classes, settings, run.seeds["correlation"],
                                       state_path=state, description="correlation classifier (B + X crops)")
    del train
    held = {}
    for name in ATTACKED:
        ids, squares = kept_crops(run, name, table)
        probabilities = predict_probabilities(model, _crops(run, table, ids, squares))
        save_npz(folder / f"probabilities_{name}.npz", ids=ids, probabilities=probabilities)
        held[name] = calibration(probabilities, table.labels[index_of_ids(table.ids, ids, f"crops of {name}")]) \
            if len(ids) else None
    save_weights(folder / "classifier.safetensors", model, {"temperature": model.temperature, "n_classes": n_classes})
    # Which crops it learnt from, so that anyone can check it never saw an image of A or T.
    save_npz(folder / "training_ids.npz", ids=train_ids, labels=labels)
    summary = {
        "reference": "correlation classifier",
        "trained_on": {"B": int(len(b_ids)), "X": int(len(x_ids))},
        "predicts": {name: int(held[name]["n"]) if held[name] else 0 for name in ATTACKED},
        "settings": dataclasses.asdict(settings),
        "seed": run.seeds["correlation"],
        "input_size": c.data.input_size,
        "temperature": model.temperature,
        "best_epoch": model.best_epoch,
        "history": model.history,
        # Calibration of the temperature-scaled probabilities: on the validation fold (part of B + X) and on
        # the crops it scores, which it never saw (T: the control; A: the attacked set).
        "calibration": {"validation": model.validation or None, "T": held["T"], "A": held["A"]},
    }
    write_json(folder / "classifier.json", summary)
    state.unlink(missing_ok=True)  # finished: the weights and probabilities are the stage's output
    cal = held["T"]
    if cal:
        print(f"[correlation] on T: accuracy {cal['accuracy']:.1%}, mean confidence {cal['mean_confidence']:.1%}, "
              f"ECE {cal['ece']:.3f} (temperature {model.temperature:.3g}, epoch {model.best_epoch})")
    return folder / "classifier.json"


CORRELATION = Stage(
    "correlation", stage_correlation, reads=("data", "split", "crops"),
    keys=("correlation", "crop", "data.input_size"), seeds=("correlation",),
    also_reads={"attack.batch_size": "how many crops are cut and scored at once, not what they score",
                "model.target": "whether the stage applies (an audit of a target alone), not what it computes: the "
                                "classifier never sees the target",
                "model.reference": "whether the stage applies (no reference model)"},
    outputs=(f"models/{CLASSIFIER}",), applies=lambda config: config.model.one_model,
    unneeded="a reference model is trained or given: the two-model test",
    description="the one-model test's reference: a class classifier of B's and X's periphery crops (no --reference)",
)
