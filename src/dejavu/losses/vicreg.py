"""VICReg loss (Bardes, Ponce, LeCun 2022), the paper's main recipe (weights 25 / 25 / 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def invariance(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the two views' embeddings."""
    return F.mse_loss(z_a, z_b)


def variance(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Hinge keeping each dimension's standard deviation above 1 across the batch."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances, divided by the dimension."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d


def vicreg_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
) -> torch.Tensor:
    """VICReg loss of two (N, D) embedding batches of the same N images under two augmentations.

    Example:
        >>> z = torch.randn(8, 16)
        >>> float(vicreg_loss(z, z, sim_weight=25, var_weight=0, cov_weight=0))
        0.0
    """
    return (
        sim_weight * invariance(z_a, z_b)
        + var_weight * (variance(z_a) + variance(z_b)) / 2
        + cov_weight * (covariance(z_a) + covariance(z_b))
    )
