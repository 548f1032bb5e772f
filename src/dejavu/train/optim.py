"""Optimisers and per-iteration learning-rate schedules."""

from __future__ import annotations

import math

import numpy as np
import torch


def build_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def lr_schedule(base_lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: int, kind: str) -> np.ndarray:
    """Learning rate for every iteration: linear warm-up, then cosine to zero or constant.

    Example:
        >>> lr_schedule(1.0, 10, 2, 1, "cosine")[[0, 1, 2, 19]].round(3).tolist()
        [0.5, 1.0, 0.993, 0.007]
    """
    total = epochs * steps_per_epoch
    warmup = min(warmup_epochs * steps_per_epoch, total)
    step = np.arange(total, dtype=np.float64)
    rates = np.full(total, base_lr)
    if warmup:
        rates[:warmup] = base_lr * (step[:warmup] + 1) / warmup
    if kind == "cosine" and total > warmup:
        progress = (step[warmup:] - warmup + 1) / (total - warmup + 1)
        rates[warmup:] = base_lr * 0.5 * (1 + np.cos(math.pi * progress))
    return rates
