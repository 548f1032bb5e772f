"""Optimisers and per-iteration learning-rate schedules."""

from __future__ import annotations

import math

import numpy as np
import torch


OPTIMIZERS = ("adamw", "sgd", "lars")


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each weight matrix is rescaled by a layer-wise trust ratio.

    The paper's optimiser (as in VICReg, after You et al. 2017). For a parameter p with gradient g:
    g <- g + weight_decay * p, then g <- g * eta * ||p|| / ||g|| (1 when either norm is 0), then
    mu <- momentum * mu + g and p <- p - lr * mu. With ``exclude_1d`` (the default) biases and norm
    layers' parameters (p.ndim <= 1) get neither the weight decay nor the trust ratio: decaying
    them only hurts, and their norms are too small a scale for a step.

    The momentum buffers are the standard optimiser state, so ``state_dict`` round-trips for resume.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
        >>> w.grad = torch.tensor([[0.0, 2.0]])  # ||g|| = 2: trust = 0.001 * 5 / 2
        >>> LARS([w], lr=1.0).step()
        >>> [round(v, 6) for v in w.detach().flatten().tolist()]  # w - lr * trust * g
        [3.0, 3.995]
    """

    def __init__(
        self,
        params,
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
        exclude_1d: bool = True,
    ):
        if lr < 0:
            raise ValueError(f"LARS needs a learning rate >= 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"LARS needs a weight decay >= 0, got {weight_decay}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS needs a momentum in [0, 1), got {momentum}")
        if eta <= 0:
            raise ValueError(f"LARS needs a trust coefficient eta > 0, got {eta}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, exclude_1d=exclude_1d)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                update = p.grad
                if p.ndim > 1 or not group["exclude_1d"]:
                    update = update.add(p, alpha=group["weight_decay"])
                    p_norm = torch.linalg.vector_norm(p)
                    u_norm = torch.linalg.vector_norm(update)
                    # torch.where rather than an `if` on the norms: no device-to-host sync per parameter.
                    trust = torch.where(
                        (p_norm > 0) & (u_norm > 0), group["eta"] * p_norm / u_norm, torch.ones_like(p_norm)
                    )
                    update = update.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                p.add_(buffer, alpha=-group["lr"])
        return loss


def build_optimizer(
    params, name: str, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`); ``momentum`` is used by SGD and LARS."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return LARS(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(map(repr, OPTIMIZERS))}")


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
