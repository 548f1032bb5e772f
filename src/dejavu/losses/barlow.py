"""Barlow Twins loss (Zbontar et al. 2021); the paper's recipe uses lambda = 0.0051."""

from __future__ import annotations

import torch


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(D, D) cross-correlation of the two views' embeddings, each standardised over the batch."""
    n = z_a.shape[0]
    a = (z_a - z_a.mean(0)) / (z_a.std(0, unbiased=False) + eps)
    b = (z_b - z_b.mean(0)) / (z_b.std(0, unbiased=False) + eps)
    return a.T @ b / n


def barlow_twins_loss(z_a: torch.Tensor, z_b: torch.Tensor, *, lambda_off_diagonal: float = 0.0051) -> torch.Tensor:
    """Sum over dimensions of (1 - C_ii)^2 plus lambda times the sum of squared off-diagonal C_ij.

    Example:
        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        >>> round(float(barlow_twins_loss(z, -z)), 3)  # C = -I: two diagonal terms of (1 - (-1))^2
        8.0
    """
    c = cross_correlation(z_a, z_b)
    on_diagonal = (1.0 - torch.diagonal(c)).pow(2).sum()
    off_diagonal = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    return on_diagonal + lambda_off_diagonal * off_diagonal
