"""DINO's self-distillation loss (Caron et al. 2021), its teacher centring and teacher-temperature warm-up.

The paper's recipe: student temperature 0.1, teacher temperature 0.04 -> 0.07 over 50 warm-up
epochs, centre momentum 0.9.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F


def dino_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    center: torch.Tensor,
    *,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    """Cross-entropy from the teacher's centred, sharpened distributions to the student's, over views.

    ``student`` holds (N, K) logits for every view, global views first and then local crops;
    ``teacher`` holds (N, K) logits for the global views only, so teacher view i is student view i.
    The loss is the mean over all pairs (teacher view i, student view j), i != j, of the batch
    mean of -sum_k q_i log p_j, with q_i = softmax((t_i - center) / teacher_temp) (detached) and
    p_j = softmax(s_j / student_temp).

    Example:
        >>> s = [torch.tensor([[0.0, 0.0]])] * 2  # the student is uniform: each pair costs log 2
        >>> t = [torch.tensor([[5.0, -5.0]])] * 2
        >>> round(float(dino_loss(s, t, torch.zeros(1, 2))), 4)
        0.6931
    """
    if len(student) < len(teacher):
        raise ValueError(f"{len(teacher)} teacher views but only {len(student)} student views")
    if len(student) < 2:
        raise ValueError("dino_loss needs at least two views: a view is never compared with itself")
    targets = [F.softmax((t - center) / teacher_temp, dim=-1).detach() for t in teacher]
    log_probs = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    total = student[0].new_zeros(())
    pairs = 0
    for i, q in enumerate(targets):
        for j, log_p in enumerate(log_probs):
            # Predicting a view from itself is trivial for the student; DINO skips those pairs.
            if i == j:
                continue
            total = total - (q * log_p).sum(dim=-1).mean()
            pairs += 1
    return total / pairs


@torch.no_grad()
def update_center(center: torch.Tensor, teacher: list[torch.Tensor], momentum: float = 0.9) -> torch.Tensor:
    """New (1, K) centre: an EMA of the mean teacher logit over every teacher view and every process.

    Centring stops one prototype from dominating the teacher's output (collapse); the mean is
    over the global batch so that all processes keep the same centre.

    Example:
        >>> c = update_center(torch.zeros(1, 2), [torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, 5.0]])])
        >>> c  # 0.1 * the mean [2, 4]
        tensor([[0.2000, 0.4000]])
    """
    logits = torch.cat([t.detach() for t in teacher]).float()
    # The sum and the row count travel in one vector: a single all_reduce, and exact with uneven shards.
    stats = torch.cat([logits.sum(dim=0), logits.new_tensor([logits.shape[0]])])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    mean = (stats[:-1] / stats[-1]).unsqueeze(0)
    return (center * momentum + mean * (1.0 - momentum)).to(center.dtype)


def teacher_temperatures(
    start: float, end: float, warmup_epochs: int, epochs: int, steps_per_epoch: int
) -> np.ndarray:
    """float64 (epochs * steps_per_epoch,) teacher temperature for every iteration: linear from ``start`` to
    ``end`` over ``warmup_epochs`` epochs, then ``end``.

    The paper's recipe is 0.04 -> 0.07 over 50 epochs: a cold teacher keeps its targets sharp
    while the student is still near uniform. As in DINO's ``main_dino.py``, the ramp does not depend
    on the run's length: a run shorter than the warm-up stops partway up the ramp and never reaches
    ``end`` (squeezing the ramp into the run would train with another recipe than the one named).

    Examples:
        >>> teacher_temperatures(0.04, 0.07, warmup_epochs=2, epochs=3, steps_per_epoch=2).round(3).tolist()
        [0.04, 0.05, 0.06, 0.07, 0.07, 0.07]
        >>> teacher_temperatures(0.04, 0.07, warmup_epochs=2, epochs=1, steps_per_epoch=2).round(3).tolist()
        [0.04, 0.05]
    """
    total = epochs * steps_per_epoch
    ramp = np.linspace(start, end, warmup_epochs * steps_per_epoch)
    return np.concatenate([ramp, np.full(max(total - len(ramp), 0), end, dtype=np.float64)])[:total]
