"""CLIP's symmetric InfoNCE loss (Radford et al. 2021), open_clip's implementation."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

# CLIP clamps the learnt inverse temperature at 100, so that the logits cannot grow without bound.
MAX_LOGIT_SCALE = math.log(100.0)


def clip_loss(image_z: torch.Tensor, text_z: torch.Tensor, *, log_scale: torch.Tensor) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies over the (N, N) cosine logits of N pairs,
    scaled by exp(``log_scale``) (clamped at 100): each image must pick its own caption and each caption its image.

    Example:
        >>> z = torch.eye(3)  # every pair matches, every other similarity is 0: log(1 + 2 / e)
        >>> round(float(clip_loss(z, z, log_scale=torch.tensor(0.0))), 4)
        0.5514
    """
    scale = log_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    return _open_clip_loss()(F.normalize(image_z, dim=1), F.normalize(text_z, dim=1), scale)


@lru_cache(maxsize=1)
def _open_clip_loss():
    """One open_clip ClipLoss for the process: with its defaults (no label cache, one process's features) it
    holds no state between calls, so every step can share it."""
    from open_clip.loss import ClipLoss  # seconds to import: only CLIP runs pay for it

    return ClipLoss()
