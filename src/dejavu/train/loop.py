"""The training loop: augmented views on the device, the method's loss, DDP, AMP, checkpoints, resume after a kill."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dejavu.config import TrainConfig, train_recipe
from dejavu.data.augment import ssl_view, to_float
from dejavu.data.sources import ArraySource, FileSource
from dejavu.errors import CheckpointError, ConfigError, ModelError
from dejavu.runs import write_json
from dejavu import distributed as dist
from dejavu.train.allocator import keep_freed_memory
from dejavu.train.methods import METHODS, Method, build_method
from dejavu.train.checkpoints import load_resume, save_resume, save_weights
from dejavu.train.optim import build_optimizer, lr_schedule


def recipe_fingerprint(config: TrainConfig, input_size: int, seed: int, data_fingerprint: str) -> dict:
    """What a checkpoint must match to be resumed or reused: recipe, resolution, seed and data."""
    return {
        "recipe": json.dumps(train_recipe(config), sort_keys=True),
        "input_size": input_size,
        "seed": seed,
        "data": data_fingerprint,
    }


def check_precision(device: torch.device, precision: str) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("config key 'train.precision' = fp16 needs a CUDA GPU (loss scaling); use bf16 or fp32 on CPU")


def _autocast(device: torch.device, precision: str):
    check_precision(device, precision)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def make_views(
    uint8_batch: torch.Tensor, method: Method, config: TrainConfig, generator: torch.Generator,
    part: tuple[int, int] | None, device: torch.device,
) -> list[torch.Tensor]:
    """The method's augmented views of a uint8 (N, H, W, 3) batch, made on ``device`` (batched, no PIL)."""
    images = to_float(uint8_batch.to(device, non_blocking=True))
    return [
        ssl_view(images, side, config.augment, generator, part, scale).contiguous(memory_format=torch.channels_last)
        for side, scale in method.views
    ]


def optimisation_step(
    model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    views: list[torch.Tensor], labels: torch.Tensor | None, iteration: int, config: TrainConfig,
) -> torch.Tensor:
    """Loss (under autocast), backward (scaled), optional clipping, step, EMA; returns the detached loss.

    ``model`` is ``method`` itself or its DDP wrapper.
    """
    device = views[0].device
    with _autocast(device, config.precision):
        loss = model(views, labels, iteration)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if config.grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    method.after_step(iteration)
    return loss.detach()  # no .item(): a GPU keeps running ahead


@dataclass
class TrainState:
    """Everything the epochs read and advance; built by :func:`setup_training`, restored from ``resume.pt``.

    ``model`` is ``method`` itself or its DDP wrapper; ``rates`` holds one learning rate per iteration
    (epochs * steps_per_epoch); ``batch`` is the global batch and ``local`` this process's rows of it;
    ``history`` the mean loss of every finished epoch; ``start_epoch`` the first epoch still to run;
    ``meta`` the :func:`recipe_fingerprint` that checkpoints carry. ``seen`` and ``clock``
    (``time.perf_counter``) count the images and time of this session only, for the throughput;
    ``last_save`` (``time.monotonic``) is when the resume state was last written.
    """

    method: Method
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    rates: np.ndarray
    source: ArraySource | FileSource
    labels: torch.Tensor | None
    batch: int
    local: int
    steps_per_epoch: int
    meta: dict
    device: torch.device
    history: list[float] = field(default_factory=list)
    start_epoch: int = 0
    seen: int = 0
    clock: float = 0.0
    last_save: float = 0.0


def _global_batch(n: int, config: TrainConfig, world: int) -> int:
    """``train.batch_size``, or all ``n`` images when fewer, as long as the processes can split it."""
    batch = min(config.batch_size, n)
    if batch < config.batch_size and batch % world:
        raise ConfigError(
            f"only {n} training images: the batch (train.batch_size = {config.batch_size}) shrinks to {n}, which the "
            f"{world} processes cannot split evenly; use {world * max(1, n // world)} images or fewer processes"
        )
    return batch


def setup_training(
    images: np.ndarray | ArraySource | FileSource, config: TrainConfig, input_size: int, seed: int,
    out_dir: Path, data_fingerprint: str, labels: np.ndarray | None, n_classes: int,
) -> TrainState:
    """Method, optimiser, schedules and loss scaler for ``config``, then the resume state if ``out_dir`` has one.

    The order of the seeding and of the RNG draws is part of the reproducibility contract: changing
    it changes the weights.
    """
    keep_freed_memory()
    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    meta = recipe_fingerprint(config, input_size, seed, data_fingerprint)
    device, world = dist.device(), dist.world_size()
    source = ArraySource(images) if isinstance(images, np.ndarray) else images
    batch = _global_batch(len(source), config, world)
    local = dist.local_batch(batch)
    steps_per_epoch = len(source) // batch  # drop the ragged last batch: batch statistics need full batches
    if METHODS[config.method].needs_labels and labels is None:
        what = "image-caption pairs" if METHODS[config.method].needs_captions else "labels"
        raise ConfigError(f"config key 'train.method' = {config.method} trains on {what}, but none were given")
    label_tensor = torch.as_tensor(labels, dtype=torch.long) if labels is not None else None

    torch.manual_seed(seed)
    method = build_method(config, input_size, config.epochs, steps_per_epoch, n_classes)
    # channels-last runs the CPU (oneDNN) and GPU convolutions ~1.4x faster at these sizes.
    method = method.to(device, memory_format=torch.channels_last)
    if config.sync_batchnorm and world > 1 and device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    params = [p for p in method.parameters() if p.requires_grad]
    lr = config.lr * (batch / 256 if config.lr_scaling == "linear" else 1.0)
    optimizer = build_optimizer(params, config.optimizer, lr, config.weight_decay, config.momentum)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    check_precision(device, config.precision)  # refuse fp16 on a CPU before any work
    state = TrainState(
        method=method, model=method, optimizer=optimizer, scaler=scaler,
        generator=torch.Generator().manual_seed(seed),  # on the CPU: the same draws on any device
        rates=lr_schedule(lr, config.epochs, steps_per_epoch, config.warmup_epochs, config.schedule),
        source=source, labels=label_tensor, batch=batch, local=local, steps_per_epoch=steps_per_epoch,
        meta=meta, device=device,
    )
    _restore(state, out_dir / "resume.pt")
    if world > 1:
        state.model = nn.parallel.DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
    method.train()
    return state


def _restore(state: TrainState, resume_path: Path) -> None:
    # Rank zero decides, so that no process starts afresh while the others resume (a shared file system
    # may show a new file late).
    if not dist.broadcast_flag(resume_path.is_file()):
        return
    if not resume_path.is_file():
        raise CheckpointError(f"rank {dist.rank()} cannot see rank 0's resume state '{resume_path}': is --out on a shared file system?")
    saved = load_resume(resume_path, state.meta)
    epochs = len(state.rates) // max(state.steps_per_epoch, 1)
    epoch, history = saved.get("epoch"), saved.get("history")
    # A resume state is only ever written after a finished epoch before the last, with one loss per epoch.
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 < epoch < epochs:
        raise _bad_resume(resume_path, f"its epoch is {epoch!r}, expected a whole number from 1 to {epochs - 1}")
    if not isinstance(history, torch.Tensor) or history.ndim != 1 or len(history) != epoch:
        raise _bad_resume(resume_path, f"its loss history does not hold one loss for each of its {epoch} epochs")
    parts = (("method", state.method.load_state_dict), ("optimizer", state.optimizer.load_state_dict),
             ("scaler", state.scaler.load_state_dict), ("generator", state.generator.set_state),
             ("torch_rng", torch.set_rng_state))
    for name, restore in parts:
        if name not in saved:
            raise _bad_resume(resume_path, f"it has no '{name}' state")
        try:
            restore(saved[name])
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise _bad_resume(resume_path, f"its '{name}' state does not fit this training ({exc})") from None
    state.history = history.tolist()
    state.start_epoch = epoch


def _bad_resume(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"resume state '{path}' cannot continue this training: {why}; delete it to train this model from the "
        "start (the run's other finished stages are kept)"
    )


def train_one_epoch(state: TrainState, epoch: int, config: TrainConfig, bar: tqdm) -> tuple[float, float]:
    """One pass over the data: views, loss, backward, step, EMA. Returns (mean loss over all processes,
    images per second over this session so far), and shows both on ``bar``.
    """
    rank, world = dist.rank(), dist.world_size()
    batch, local, steps = state.batch, state.local, state.steps_per_epoch
    order = torch.randperm(len(state.source), generator=state.generator).numpy()
    # Every process draws the same permutation and keeps its rows of each global batch.
    chunks = [order[step * batch + rank * local : step * batch + (rank + 1) * local] for step in range(steps)]
    part = (rank * local, batch) if world > 1 else None
    losses = torch.zeros((), device=state.device, dtype=torch.float64)
    for step, uint8_batch in enumerate(state.source.batches(chunks)):
        iteration = epoch * steps + step
        for group in state.optimizer.param_groups:
            group["lr"] = float(state.rates[iteration])
        views = make_views(uint8_batch, state.method, config, state.generator, part, state.device)
        batch_labels = state.labels[chunks[step]].to(state.device) if state.labels is not None else None
        losses += optimisation_step(
            state.model, state.method, state.optimizer, state.scaler, views, batch_labels, iteration, config
        )
        state.seen += len(uint8_batch) * world
    loss = dist.mean_over_processes(losses) / max(steps, 1)
    rate = state.seen / max(time.perf_counter() - state.clock, 1e-9)
    bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}", refresh=False)
    return loss, rate


def save_epoch(state: TrainState, done: int, config: TrainConfig, out_dir: Path) -> None:
    """After epoch ``done`` (1-based): the encoder every ``checkpoint_every`` epochs, and the rolling
    resume state once ``resume_every_s`` seconds have passed since the last. Neither after the last epoch.

    Every process must call it: whether the resume state is due is a collective decision.
    """
    main = dist.is_main()
    if main and config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.epochs:
        save_weights(out_dir / "checkpoints" / f"epoch_{done:05d}.safetensors", state.method.encoder, {**state.meta, "epoch": done})
    if dist.broadcast_flag(time.monotonic() - state.last_save >= config.resume_every_s and done < config.epochs):
        if main:
            save_resume(out_dir / "resume.pt", {
                "meta": json.dumps(state.meta, sort_keys=True),
                "method": state.method.state_dict(),
                "optimizer": state.optimizer.state_dict(),
                "scaler": state.scaler.state_dict(),
                "generator": state.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": torch.tensor(state.history, dtype=torch.float64),
                "epoch": done,
            })
        state.last_save = time.monotonic()


def save_final(state: TrainState, config: TrainConfig, out_dir: Path, elapsed: float) -> Path:
    """``model.safetensors`` and ``history.json``, then drop the resume state; returns the weights' path."""
    final_path = out_dir / "model.safetensors"
    if dist.is_main():
        save_weights(final_path, state.method.encoder, {**state.meta, "epoch": config.epochs})
        for name, module in state.method.companions().items():
            save_weights(out_dir / f"{name}.safetensors", module, {**state.meta, "epoch": config.epochs})
        write_json(out_dir / "history.json", {
            "method": config.method, "loss": state.history, "epochs": config.epochs, "images": len(state.source),
            "processes": dist.world_size(), "device": str(state.device),
            "images_per_second_this_session": state.seen / max(elapsed, 1e-9),
        })
        resume_path = out_dir / "resume.pt"
        if resume_path.exists():
            resume_path.unlink()
    dist.barrier()  # the others must not read the weights before rank zero has written them
    return final_path


def _diverged(out_dir: Path, description: str, epoch: int, loss: float, config: TrainConfig) -> None:
    """Stop a training whose loss is no longer a number: nothing it would produce can be audited."""
    resume = out_dir / "resume.pt"
    if dist.is_main() and resume.exists():
        resume.unlink()  # the state of a training on its way to divergence is not worth continuing
    raise ModelError(
        f"{description}: the training diverged (mean loss {loss} in epoch {epoch}), so no verdict can be drawn "
        f"from it; lower train.lr (now {config.lr:g}) or set train.grad_clip (now {config.grad_clip:g}), e.g. "
        f"`dejavu run --out RUN train.lr={config.lr / 10:g}` (the finished data stages are kept)"
    )


def train_encoder(
    images: np.ndarray | ArraySource | FileSource,
    config: TrainConfig,
    input_size: int,
    seed: int,
    out_dir: Path,
    data_fingerprint: str,
    description: str = "train",
    labels: np.ndarray | None = None,
    n_classes: int = 0,
) -> Path:
    """Train ``config.method`` on uint8 images (N, H, W, 3), or a source of them; write ``out_dir/model.safetensors``.

    Under torchrun every process calls this with the same arguments: each takes its rows of every
    global batch, rank zero writes the files. Resumable: a rolling ``resume.pt`` (all weights,
    optimiser, loss scaler, EMA teacher, RNG states, epoch) is written at most every
    ``config.resume_every_s`` seconds, so a kill loses at most that much work plus the current epoch.
    The same seed and data give the same weights, interrupted or not.

    Example:
        >>> train_encoder(table.images[a_rows], cfg.train, 32, seed=1, out_dir=run / "models/A",
        ...               data_fingerprint="abc")
    """
    out_dir = Path(out_dir)
    state = setup_training(images, config, input_size, seed, out_dir, data_fingerprint, labels, n_classes)
    state.last_save = time.monotonic()
    bar = tqdm(
        range(state.start_epoch, config.epochs), initial=state.start_epoch, total=config.epochs,
        desc=description, unit="epoch", dynamic_ncols=True, mininterval=1.0, disable=not dist.is_main(),
    )
    state.clock = time.perf_counter()
    for epoch in bar:
        loss, _ = train_one_epoch(state, epoch, config, bar)
        if not math.isfinite(loss):
            _diverged(out_dir, description, epoch + 1, loss, config)
        state.history.append(loss)
        save_epoch(state, epoch + 1, config, out_dir)
    bar.close()
    return save_final(state, config, out_dir, time.perf_counter() - state.clock)
