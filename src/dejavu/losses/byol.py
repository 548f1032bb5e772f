"""BYOL's regression loss (Grill et al. 2020): the online prediction regresses the EMA target's projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 2 - 2 cos(prediction, target), the squared distance of the unit vectors.

    One direction only: the caller symmetrises over the two views,
    ``byol_loss(p_a, t_b) + byol_loss(p_b, t_a)``. The target is detached, so only the online
    branch is trained; the target follows it by EMA.

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> round(float(byol_loss(p, torch.tensor([[3.0, 0.0], [5.0, 0.0]]))), 4)  # cosines 1 and 0
        1.0
    """
    p = F.normalize(prediction, dim=-1)
    t = F.normalize(target.detach(), dim=-1)
    return (2.0 - 2.0 * (p * t).sum(dim=-1)).mean()
