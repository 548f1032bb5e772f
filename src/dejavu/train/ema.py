"""Exponential moving-average teachers (BYOL's target, DINO's teacher) and their momentum schedule."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def momentum_schedule(base: float, final: float, total_steps: int) -> np.ndarray:
    """EMA momentum for every iteration, raised along a half cosine from ``base`` (first) to ``final`` (last).

    The paper's BYOL and DINO recipes use 0.996 -> 1: the teacher follows the student closely
    early on and freezes by the end. m_t = final - (final - base) (cos(pi t / (T - 1)) + 1) / 2,
    with T - 1 rather than BYOL's T so that the last step really uses ``final``.

    Example:
        >>> momentum_schedule(0.996, 1.0, 5).round(6).tolist()
        [0.996, 0.996586, 0.998, 0.999414, 1.0]
    """
    if total_steps < 1:
        return np.zeros(0, dtype=np.float64)
    progress = np.arange(total_steps, dtype=np.float64) / max(total_steps - 1, 1)
    return final - (final - base) * (np.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: every teacher parameter becomes ``momentum * teacher + (1 - momentum) * student``.

    Buffers are left alone on purpose. The teacher runs its own forward passes in training mode, so
    its BatchNorm statistics already describe its own weights on its own inputs. Copying the
    student's would be wrong for DINO, whose student also sees the local crops: its running
    statistics are mostly those of the small crops, yet the teacher is the network evaluated
    (on full-size images).

    Example:
        >>> teacher, student = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
        >>> _ = nn.init.constant_(teacher.weight, 1.0), nn.init.constant_(student.weight, 3.0)
        >>> ema_update(teacher, student, 0.75)
        >>> teacher.weight.item()
        1.5
    """
    teacher_params = list(teacher.parameters())
    student_params = list(student.parameters())
    if len(teacher_params) != len(student_params):
        raise ValueError(f"teacher has {len(teacher_params)} parameters, student {len(student_params)}")
    if not teacher_params:
        return
    # One fused kernel per dtype/device group instead of two per tensor: the teacher update runs every step.
    torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
