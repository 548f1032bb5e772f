"""Cross-entropy for the paper's supervised baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of (N, C) logits against (N,) integer labels, optionally label-smoothed.

    With smoothing s the target puts 1 - s on the label and s / C on every class (the label included).

    Example:
        >>> logits = torch.tensor([[0.0, 0.0]])  # a uniform guess over two classes costs log 2
        >>> round(float(supervised_loss(logits, torch.tensor([1]))), 4)
        0.6931
    """
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
