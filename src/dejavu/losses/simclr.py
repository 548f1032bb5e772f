"""SimCLR's NT-Xent loss (Chen et al. 2020); the paper's SimCLR recipe uses temperature 0.15."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent_loss(z_a: torch.Tensor, z_b: torch.Tensor, *, temperature: float = 0.15) -> torch.Tensor:
    """Normalised-temperature cross-entropy of two (N, D) batches of the same N images' two views.

    Each of the 2N embeddings must pick its other view among the 2N - 1 others by cosine similarity
    / temperature; the loss is the mean cross-entropy over all 2N.

    Example:
        >>> z = torch.eye(4)  # the positive has similarity 1, the six negatives 0: log(1 + 6 / e)
        >>> round(float(nt_xent_loss(z, z, temperature=1.0)), 4)
        1.1654
    """
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    logits = z @ z.T / temperature
    # An embedding is not a candidate for itself.
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)
