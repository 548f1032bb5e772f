"""The correlation classifier of the one-model test (Kokhlikyan et al., NeurIPS 2024).

A network trained *with labels* to predict an object's class from its periphery crop (the background,
the object's box excluded), on images the audited model never saw. Its accuracy, and above all its
calibrated probabilities, say how much the background alone reveals about the foreground: what the
target model gets right beyond that is déjà vu memorisation, with no reference model needed.

Calibration is part of the contract, because a classifier that is over- or under-confident inflates or
hides déjà vu: a stratified, seeded validation fold picks the epoch with the lowest validation NLL (its
weights are kept) and fits one temperature on it (temperature scaling, Guo et al. 2017), which
:func:`predict_probabilities` applies. :func:`cross_fit_probabilities` gives out-of-fold probabilities
for crops that must themselves be scored. Everything is seeded: the same seed, data and settings give
bitwise the same probabilities on a CPU (a GPU's kernels may differ in the last bits).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dejavu import distributed as dist
from dejavu.data.augment import random_resized_crop
from dejavu.errors import CheckpointError, ConfigError, DataError, ModelError
from dejavu.losses.supervised import supervised_loss
from dejavu.models.backbones import build_backbone
from dejavu.runs import atomic_path


@dataclass
class ClassifierSettings:
    """How the correlation classifier is built and trained.

    ``backbone``, ``widths``, ``stem``, ``patch_size``: as :func:`dejavu.models.backbones.build_backbone`.
    AdamW (``lr``, ``weight_decay``) with a cosine decay per step over ``epochs``; cross-entropy with
    ``label_smoothing``. ``validation_fraction`` of the crops (per class, at least one crop of each class
    stays in training) choose the epoch and the temperature; 0 trains on all, keeps the last epoch and
    temperature 1. Augmentation: a horizontal flip (``flip``) and a random resized crop covering
    ``min_crop_area``..1 of the crop (1 with aspect 1 would be none; aspect varies in 3/4..4/3).
    """

    backbone: str = "convnet"
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    stem: str = "auto"
    patch_size: int = 0
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    validation_fraction: float = 0.1
    flip: bool = True
    min_crop_area: float = 0.7

    def check(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, found {self.epochs}")
        if self.batch_size < 2:
            problems.append(f"batch_size must be at least 2 (batch normalisation), found {self.batch_size}")
        if not 0.0 <= self.validation_fraction < 1.0:
            problems.append(f"validation_fraction must lie in [0, 1), found {self.validation_fraction}")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"label_smoothing must lie in [0, 1), found {self.label_smoothing}")
        if not 0.0 < self.min_crop_area <= 1.0:
            problems.append(f"min_crop_area must lie in (0, 1], found {self.min_crop_area}")
        if self.lr <= 0:
            problems.append(f"lr must be positive, found {self.lr}")
        if problems:
            raise ConfigError("correlation classifier settings: " + "; ".join(problems))


class CorrelationClassifier(nn.Module):
    """Backbone + linear head. ``forward`` gives the raw logits; :func:`predict_probabilities` divides
    them by ``temperature``.

    Attributes set by :func:`fit_correlation_classifier`: ``temperature`` (float), ``best_epoch``
    (1-based epoch whose weights are kept), ``validation`` (:func:`calibration` of the validation fold
    after scaling; ``{}`` without one), ``history`` (``train_loss``, ``val_nll``, ``val_accuracy``: one
    value per epoch; the validation lists are empty without a validation fold), ``train_rows`` and
    ``validation_rows`` (indices into the crops it was given).
    """

    def __init__(self, backbone: nn.Module, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_features, n_classes)
        self.n_classes = n_classes
        self.temperature = 1.0
        self.best_epoch = 0
        self.validation: dict = {}
        self.history: dict[str, list[float]] = {"train_loss": [], "val_nll": [], "val_accuracy": []}
        self.train_rows = np.zeros(0, np.int64)
        self.validation_rows = np.zeros(0, np.int64)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(crops))


def _check_data(crops: torch.Tensor, labels: np.ndarray, n_classes: int, what: str = "training") -> np.ndarray:
    """Labels as int64, after the checks every entry point shares; raises DataError in one line."""
    labels = np.asarray(labels)
    if not isinstance(crops, torch.Tensor) or crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
        shape = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
        raise DataError(f"correlation classifier: crops must be a float tensor (N, 3, s, s), found {shape}")
    if labels.ndim != 1 or len(labels) != len(crops):
        raise DataError(f"correlation classifier: {len(crops)} crops but labels of shape {labels.shape}; "
                        "expected one label per crop")
    if len(labels) and not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"correlation classifier: labels must be integers, found dtype {labels.dtype}")
    if n_classes < 2:
        raise DataError(f"correlation classifier: needs at least 2 classes, found n_classes = {n_classes}")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"correlation classifier: labels must lie in [0, {n_classes}), found "
                        f"{labels.min()}..{labels.max()}")
    missing = np.setdiff1d(np.arange(n_classes), labels)
    if len(missing):
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise DataError(f"correlation classifier: {len(missing)} of {n_classes} classes have no {what} crop "
                        f"(class {shown}); every class needs at least one")
    return labels


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (train_rows, validation_rows), both sorted: ``round(fraction * n_c)`` crops of
    each class of ``n_c`` are held out, but never its last one.

    Example:
        >>> train, val = validation_split(np.array([0] * 10 + [1] * 10), 0.2, seed=0)
        >>> len(train), len(val)
        (16, 4)
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x5EED])
    held = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        n_val = min(len(rows) - 1, round(fraction * len(rows)))
        held.append(rng.permutation(rows)[:n_val])
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), val), val.astype(np.int64)


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict:
    """How well (N, C) predicted probabilities fit the true labels.

    ``accuracy``: of the arg-max; ``mean_confidence``: the mean of each row's largest probability;
    ``ece``: expected calibration error, sum over equal-width confidence bins (bin b holds confidences in
    (b/bins, (b+1)/bins], the first also 0) of the bin's share of rows times |accuracy - mean
    confidence| in it; ``nll``: mean -log p(label) (p clipped at 1e-300); ``brier``: mean squared
    distance of each row to the label's one-hot vector (sum over classes, 0..2).

    Example:
        >>> round(calibration(np.array([[0.8, 0.2], [0.4, 0.6]]), np.array([0, 0]), bins=2)["ece"], 6)
        0.2
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.ndim != 1 or len(p) != len(y) or len(y) == 0:
        raise DataError(f"calibration: needs (N, C) probabilities and N labels with N > 0, found {p.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise DataError(f"calibration: labels must lie in [0, {p.shape[1]}), found {y.min()}..{y.max()}")
    n = len(y)
    predicted, confidence = p.argmax(1), p.max(1)
    correct = (predicted == y).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    ece = 0.0
    for b in np.unique(which):
        in_bin = which == b
        ece += in_bin.sum() / n * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    truth = p[np.arange(n), y]
    onehot = np.zeros_like(p)
    onehot[np.arange(n), y] = 1.0
    return {
        "n": int(n),
        "accuracy": float(correct.mean()),
        "mean_confidence": float(confidence.mean()),
        "ece": float(ece),
        "nll": float(-np.log(np.maximum(truth, 1e-300)).mean()),
        "brier": float(((p - onehot) ** 2).sum(1).mean()),
    }


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T in [0.01, 100] minimising the mean NLL of softmax(logits / T) (temperature scaling).

    The NLL is convex in 1/T, so golden-section search on log(1/T) finds its minimum deterministically.
    The bounds: a validation fold the classifier separates perfectly pulls T towards 0 without end.
    """
    z = logits.detach().to("cpu", torch.float64)
    y = labels.to("cpu", torch.long)

    def nll(log_beta: float) -> float:
        return float(nn.functional.cross_entropy(z * math.exp(log_beta), y))

    low, high = math.log(1e-2), math.log(1e2)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(90):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return float(math.exp(-(low + high) / 2))


@dataclass
class _Training:
    """What the epochs advance, and what the resume state holds."""

    model: CorrelationClassifier
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    rates: np.ndarray
    steps: int
    history: dict[str, list[float]]
    best: dict[str, torch.Tensor] = field(default_factory=dict)
    best_epoch: int = 0
    best_nll: float = math.inf
    epoch: int = 0


def _fingerprint(crops: torch.Tensor, labels: np.ndarray, n_classes: int, settings: ClassifierSettings, seed: int) -> str:
    """What a resume state must match: settings, seed, classes and the data (a hash of crops and labels)."""
    digest = hashlib.sha256(np.ascontiguousarray(crops.detach().cpu().float().numpy()).data)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return json.dumps({"settings": asdict(settings), "seed": seed, "n_classes": n_classes, "n": len(labels),
                       "side": int(crops.shape[-1]), "data": digest.hexdigest()}, sort_keys=True)


def _cosine(lr: float, total: int) -> np.ndarray:
    return lr * 0.5 * (1.0 + np.cos(np.pi * np.arange(total) / max(total, 1)))


def _new_training(n_train: int, n_classes: int, side: int, settings: ClassifierSettings, seed: int,
                  device: torch.device) -> _Training:
    torch.manual_seed(seed)  # under fork_rng: the caller's random state is left alone
    backbone = build_backbone(settings.backbone, list(settings.widths), input_size=side, stem=settings.stem,
                              patch_size=settings.patch_size)
    # channels-last runs the CPU (oneDNN) and GPU convolutions faster at these sizes.
    model = CorrelationClassifier(backbone, n_classes).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps = math.ceil(n_train / min(settings.batch_size, n_train))
    return _Training(model=model, optimizer=optimizer, generator=torch.Generator().manual_seed(seed),
                     rates=_cosine(settings.lr, steps * settings.epochs), steps=steps,
                     history={"train_loss": [], "val_nll": [], "val_accuracy": []})


def _save_state(path: Path, training: _Training, meta: str) -> None:
    state = {
        "meta": meta,
        "model": training.model.state_dict(),
        "optimizer": training.optimizer.state_dict(),
        "generator": training.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in training.history.items()},
        "best": training.best,
        "best_epoch": training.best_epoch,
        "best_nll": training.best_nll,
        "epoch": training.epoch,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _restore_state(path: Path, training: _Training, meta: str, epochs: int) -> None:
    """Continue from ``path``'s epoch; a state of another training (or an unreadable one) is refused."""
    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"correlation classifier state '{path}' cannot continue this training: {why}; "
                               "delete it to train the classifier from the start")

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise refuse(f"it is unreadable ({type(exc).__name__})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("meta"), str):
        raise refuse("it is not a correlation classifier state")
    if saved["meta"] != meta:
        ours, theirs = json.loads(meta), json.loads(saved["meta"])
        differ = sorted(k for k in ours if ours.get(k) != theirs.get(k)) or ["its metadata"]
        raise refuse(f"it was written for other {', '.join(differ)}")
    epoch = saved.get("epoch")
    if not isinstance(epoch, int) or not 0 < epoch <= epochs:
        raise refuse(f"its epoch is {epoch!r}, expected 1..{epochs}")
    try:
        training.model.load_state_dict(saved["model"])
        training.optimizer.load_state_dict(saved["optimizer"])
        training.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        training.history = {k: v.tolist() for k, v in saved["history"].items()}
        training.best, training.best_epoch = saved["best"], saved["best_epoch"]
        training.best_nll, training.epoch = float(saved["best_nll"]), epoch
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise refuse(f"its contents do not fit ({' '.join(str(exc).split())[:200]})") from None


def _logits(model: nn.Module, crops: Iterable[torch.Tensor], batch_size: int, device: torch.device) -> torch.Tensor:
    """Raw logits (float32, CPU) of every crop, in eval mode, batch by batch."""
    model.eval()
    out = []
    with torch.no_grad():
        for chunk in crops:
            for start in range(0, len(chunk), batch_size):
                batch = chunk[start:start + batch_size].to(device, torch.float32).contiguous(memory_format=torch.channels_last)
                out.append(model(batch).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, getattr(model, "n_classes", 0))


def _train_epoch(training: _Training, crops: torch.Tensor, labels: torch.Tensor, settings: ClassifierSettings,
                 device: torch.device) -> float:
    """One pass in random order, each batch augmented (flip, random resized crop); the mean loss."""
    model, side = training.model, crops.shape[-1]
    model.train()
    order = torch.randperm(len(crops), generator=training.generator)
    losses = torch.zeros((), dtype=torch.float64, device=device)
    for step, rows in enumerate(torch.tensor_split(order, training.steps)):
        for group in training.optimizer.param_groups:
            group["lr"] = float(training.rates[training.epoch * training.steps + step])
        batch = crops[rows].to(device, torch.float32, non_blocking=True)
        batch = random_resized_crop(batch, side, (settings.min_crop_area, 1.0), 0.5 if settings.flip else 0.0,
                                    training.generator)
        loss = supervised_loss(model(batch.contiguous(memory_format=torch.channels_last)),
                               labels[rows].to(device), label_smoothing=settings.label_smoothing)
        training.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        training.optimizer.step()
        losses += loss.detach()
    return float(losses) / training.steps


def _run_epochs(training: _Training, crops: torch.Tensor, labels: torch.Tensor, train_rows: np.ndarray,
                val_rows: np.ndarray, settings: ClassifierSettings, device: torch.device, save: Callable[[], None],
                on_epoch: Callable[[int, dict], None] | None, description: str) -> None:
    train_x, train_y = crops[train_rows], labels[train_rows]
    val_x, val_y = crops[val_rows], labels[val_rows]
    bar = tqdm(range(training.epoch, settings.epochs), initial=training.epoch, total=settings.epochs,
               desc=description, unit="epoch", dynamic_ncols=True, mininterval=1.0, disable=not dist.is_main())
    clock, seen = time.perf_counter(), 0
    for _ in bar:
        loss = _train_epoch(training, train_x, train_y, settings, device)
        if not math.isfinite(loss):
            raise ModelError(f"{description}: the training diverged (mean loss {loss} in epoch "
                              f"{training.epoch + 1}); lower the classifier's lr (now {settings.lr:g})")
        training.epoch += 1
        training.history["train_loss"].append(loss)
        if len(val_rows):
            val_logits = _logits(training.model, [val_x], 512, device)
            nll = float(nn.functional.cross_entropy(val_logits.double(), val_y))
            training.history["val_nll"].append(nll)
            training.history["val_accuracy"].append(float((val_logits.argmax(1) == val_y).double().mean()))
            if nll < training.best_nll:
                training.best_nll, training.best_epoch = nll, training.epoch
                training.best = {k: v.detach().cpu().clone() for k, v in training.model.state_dict().items()}
        seen += len(train_rows)
        postfix = {"loss": f"{loss:.3f}", "img_s": f"{seen / max(time.perf_counter() - clock, 1e-9):.0f}"}
        if len(val_rows):
            postfix["val_nll"] = f"{training.history['val_nll'][-1]:.3f}"
        bar.set_postfix(postfix, refresh=False)
        save()
        if on_epoch is not None:
            on_epoch(training.epoch, {k: v[-1] for k, v in training.history.items() if v})
    bar.close()


def fit_correlation_classifier(
    crops: torch.Tensor, labels: np.ndarray, n_classes: int, settings: ClassifierSettings, seed: int,
    device: torch.device | None = None, state_path: Path | None = None,
    description: str = "correlation classifier", on_epoch: Callable[[int, dict], None] | None = None,
) -> CorrelationClassifier:
    """Train the classifier on normalised periphery crops (N, 3, s, s), as ``eval_crops`` makes them.

    ``device``: where to train (default: this process's GPU, or the CPU). ``state_path``: after every
    epoch the whole training state is written there atomically (tensors, numbers and lists only:
    ``torch.load(..., weights_only=True)`` reads it), and a later call with the same arguments continues
    from it, with the same result as a run never interrupted; a finished state is kept, so a rerun
    rebuilds the classifier without training. A state of other settings, seed, classes or data is
    refused with a CheckpointError (never silently overwritten: it may be another run's). ``on_epoch``:
    called after each epoch (and its save) with the 1-based epoch and that epoch's history values.
    The caller's torch random state is left as it was.

    Example: ``predict_probabilities(fit_correlation_classifier(crops, labels, 10, ClassifierSettings(), 0),
    test_crops)`` is (len(test_crops), 10).
    """
    settings.check()
    labels = _check_data(crops, labels, n_classes)
    device = torch.device(device) if device is not None else dist.device()
    train_rows, val_rows = validation_split(labels, settings.validation_fraction, seed)
    if settings.validation_fraction > 0 and not len(val_rows):
        raise DataError(f"correlation classifier: validation_fraction = {settings.validation_fraction} of "
                        f"{len(labels)} crops holds out none; give more crops or set validation_fraction = 0")
    meta = _fingerprint(crops, labels, n_classes, settings, seed) if state_path is not None else ""
    y = torch.as_tensor(labels)
    with torch.random.fork_rng(devices=[]):
        training = _new_training(len(train_rows), n_classes, crops.shape[-1], settings, seed, device)
        if state_path is not None and Path(state_path).is_file():
            _restore_state(Path(state_path), training, meta, settings.epochs)

        def save() -> None:
            if state_path is not None and dist.is_main():
                _save_state(Path(state_path), training, meta)

        _run_epochs(training, crops, y, train_rows, val_rows, settings, device, save, on_epoch, description)
    model = training.model
    if len(val_rows):
        model.load_state_dict(training.best)
        val_logits = _logits(model, [crops[val_rows]], 512, device)
        model.temperature = fit_temperature(val_logits, y[val_rows])
        model.best_epoch = training.best_epoch
        scaled = torch.softmax(val_logits.double() / model.temperature, dim=1).numpy()
        model.validation = calibration(scaled, labels[val_rows])
    else:
        model.temperature, model.best_epoch, model.validation = 1.0, settings.epochs, {}
    model.history = training.history
    model.train_rows, model.validation_rows = train_rows, val_rows
    model.eval()
    return model


def predict_probabilities(model: CorrelationClassifier, crops: torch.Tensor | Iterable[torch.Tensor],
                          batch_size: int = 512, device: torch.device | None = None) -> np.ndarray:
    """Temperature-scaled class probabilities (N, C), float64 rows summing to 1, of normalised crops (a
    tensor (N, 3, s, s), or batches of them in order). ``device``: default the model's."""
    if isinstance(crops, torch.Tensor):
        crops = [crops]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    logits = _logits(model, crops, batch_size, device).double()
    return torch.softmax(logits / float(getattr(model, "temperature", 1.0)), dim=1).numpy()


def fold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of every row: stratified (each class's rows, shuffled, are dealt to the folds
    in turn, continuing where the previous class stopped), so folds differ in size by at most one and a
    class of at least ``folds`` crops is in every fold.

    Example:
        >>> np.bincount(fold_assignment(np.array([0] * 5 + [1] * 5), 2, seed=0))
        array([5, 5])
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0xF01D])
    dealt = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
    fold = np.empty(len(labels), np.int64)
    fold[dealt] = np.arange(len(dealt)) % folds
    return fold


def fold_seed(seed: int, fold: int) -> int:
    """The seed of fold ``fold``'s classifier (distinct for every (seed, fold))."""
    return int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])


def cross_fit_probabilities(
    crops: torch.Tensor, labels: np.ndarray, n_classes: int, settings: ClassifierSettings, seed: int,
    folds: int = 2, device: torch.device | None = None, state_dir: Path | None = None,
    description: str = "correlation classifier",
) -> np.ndarray:
    """Out-of-fold probabilities (N, C): row i is predicted by the classifier of fold
    ``fold_assignment(labels, folds, seed)[i]``, trained (with seed ``fold_seed(seed, fold)``) on the
    other folds' rows only, so no crop is scored by a classifier that trained on it.

    ``state_dir``: each fold's resume state as ``fold_<k>.pt`` there. Every class needs at least 2 crops.
    """
    labels = _check_data(crops, labels, n_classes)
    if not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"correlation classifier: cross-fitting needs at least 2 folds, found {folds!r}")
    counts = np.bincount(labels, minlength=n_classes)
    if counts.min() < 2:
        rare = np.flatnonzero(counts < 2)
        raise DataError(f"correlation classifier: cross-fitting needs at least 2 crops of every class, found "
                        f"{counts.min()} of class {rare[0]} ({len(rare)} classes have fewer than 2)")
    fold = fold_assignment(labels, folds, seed)
    out = np.zeros((len(labels), n_classes), np.float64)
    for k in range(folds):
        train, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = fit_correlation_classifier(
            crops[train], labels[train], n_classes, settings, fold_seed(seed, k), device=device,
            state_path=Path(state_dir) / f"fold_{k}.pt" if state_dir is not None else None,
            description=f"{description} (fold {k + 1}/{folds})",
        )
        out[held] = predict_probabilities(model, crops[held], device=device)
    return out
