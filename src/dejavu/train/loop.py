"""The training loop: augmented views on the device, the method's loss, DDP, AMP, checkpoints, resume after a kill."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dejavu.config import TrainConfig, train_recipe
from dejavu.data.augment import ssl_view, to_float
from dejavu.data.sources import ArraySource, FileSource
from dejavu.errors import CheckpointError, ConfigError
from dejavu.runs import write_json
from dejavu.train import distributed as dist
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
    keep_freed_memory()
    out_dir = Path(out_dir)
    main = dist.is_main()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    final_path = out_dir / "model.safetensors"
    resume_path = out_dir / "resume.pt"
    meta = recipe_fingerprint(config, input_size, seed, data_fingerprint)
    device = dist.device()
    rank, world = dist.rank(), dist.world_size()

    source = ArraySource(images) if isinstance(images, np.ndarray) else images
    n = len(source)
    batch = min(config.batch_size, n)
    if batch < config.batch_size and batch % world:
        raise ConfigError(
            f"only {n} training images: the batch (train.batch_size = {config.batch_size}) shrinks to {n}, which the "
            f"{world} processes cannot split evenly; use {world * max(1, n // world)} images or fewer processes"
        )
    local = dist.local_batch(batch)
    steps_per_epoch = n // batch  # drop the ragged last batch: batch statistics need full batches
    if METHODS[config.method].needs_labels and labels is None:
        raise ConfigError(f"config key 'train.method' = {config.method} trains on labels, but none were given")
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
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on any device
    rates = lr_schedule(lr, config.epochs, steps_per_epoch, config.warmup_epochs, config.schedule)
    history: list[float] = []
    start_epoch = 0

    # Rank zero decides, so that no process starts afresh while the others resume (a shared file system
    # may show a new file late).
    if dist.broadcast_flag(resume_path.is_file()):
        if not resume_path.is_file():
            raise CheckpointError(f"rank {rank} cannot see rank 0's resume state '{resume_path}': is --out on a shared file system?")
        state = load_resume(resume_path, meta)
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history = state["history"].tolist()
        start_epoch = int(state["epoch"])

    model = method
    if world > 1:
        model = nn.parallel.DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
    method.train()
    last_save = time.monotonic()
    bar = tqdm(
        range(start_epoch, config.epochs), initial=start_epoch, total=config.epochs,
        desc=description, unit="epoch", dynamic_ncols=True, mininterval=1.0, disable=not main,
    )
    seen, clock = 0, time.perf_counter()
    for epoch in bar:
        order = torch.randperm(n, generator=generator).numpy()
        # Every process draws the same permutation and keeps its rows of each global batch.
        chunks = [order[step * batch + rank * local : step * batch + (rank + 1) * local] for step in range(steps_per_epoch)]
        part = (rank * local, batch) if world > 1 else None
        losses = torch.zeros((), device=device, dtype=torch.float64)
        for step, uint8_batch in enumerate(source.batches(chunks)):
            iteration = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = float(rates[iteration])
            views = make_views(uint8_batch, method, config, generator, part, device)
            batch_labels = label_tensor[chunks[step]].to(device) if label_tensor is not None else None
            losses += optimisation_step(model, method, optimizer, scaler, views, batch_labels, iteration, config)
            seen += len(uint8_batch) * world
        history.append(dist.mean_over_processes(losses) / max(steps_per_epoch, 1))
        done = epoch + 1
        rate = seen / max(time.perf_counter() - clock, 1e-9)
        bar.set_postfix(loss=f"{history[-1]:.3f}", img_s=f"{rate:.0f}", refresh=False)
        if main and config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.epochs:
            save_weights(out_dir / "checkpoints" / f"epoch_{done:05d}.safetensors", method.encoder, {**meta, "epoch": done})
        if dist.broadcast_flag(time.monotonic() - last_save >= config.resume_every_s and done < config.epochs):
            if main:
                save_resume(resume_path, {
                    "meta": json.dumps(meta, sort_keys=True),
                    "method": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": torch.tensor(history, dtype=torch.float64),
                    "epoch": done,
                })
            last_save = time.monotonic()
    bar.close()
    elapsed = time.perf_counter() - clock
    if main:
        save_weights(final_path, method.encoder, {**meta, "epoch": config.epochs})
        write_json(out_dir / "history.json", {
            "method": config.method, "loss": history, "epochs": config.epochs, "images": n,
            "processes": world, "device": str(device),
            "images_per_second_this_session": seen / max(elapsed, 1e-9),
        })
        if resume_path.exists():
            resume_path.unlink()
    dist.barrier()  # the others must not read the weights before rank zero has written them
    return final_path
