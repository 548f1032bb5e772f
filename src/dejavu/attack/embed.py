"""Embed full images and periphery crops with a frozen encoder at a named layer."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from dejavu.models.encoder import Encoder


@torch.no_grad()
def embed_batches(
    encoders: dict[str, Encoder], batches: Iterable[torch.Tensor], layer: str, device: torch.device | None = None,
) -> dict[str, np.ndarray]:
    """Embed each normalised float batch (B, 3, s, s) with every encoder: {name: float32 (N, D)}.

    The batches are produced once (read or decoded) and shared by the encoders; with ``device`` (a GPU)
    the encoders and batches are moved there.

    Example:
        >>> out = embed_batches({"A": model_a, "B": model_b}, [eval_images(images, 32)], "projector")
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
    device = device or torch.device("cpu")
    for encoder in encoders.values():
        encoder.eval().to(device)
    for batch in batches:
        batch = batch.to(device, non_blocking=True)
        for name, encoder in encoders.items():
            parts[name].append(encoder.embed(batch, layer).float().cpu().numpy())
    return {name: np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32) for name, chunks in parts.items()}
