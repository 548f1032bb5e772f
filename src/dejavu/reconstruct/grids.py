"""Image grids of reconstructions: one row per crop, the crop, then each model's samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dejavu.runs import atomic_path


def grid_image(crops01: torch.Tensor, samples: list[torch.Tensor], padding: int = 2) -> np.ndarray:
    """uint8 (H, W, 3): row i is crop i (float (N, 3, s, s) in [0, 1]), a blank, then for each entry of
    ``samples`` (float (N, S, 3, s, s)) its S samples of crop i, a blank between models."""
    n, side = len(crops01), crops01.shape[-1]
    if not n:  # no crop drawn: an empty (white) strip, since make_grid needs at least one image
        columns = 2 + sum(drawn.shape[1] for drawn in samples) + max(len(samples) - 1, 0)
        return np.full((padding, padding + columns * (side + padding), 3), 255, dtype=np.uint8)
    blank = torch.ones((n, 1, 3, side, side))
    parts = [crops01[:, None].float(), blank]
    for index, drawn in enumerate(samples):
        parts.append(drawn.float())
        if index < len(samples) - 1:
            parts.append(blank)
    rows = torch.cat(parts, dim=1)
    from torchvision.utils import make_grid  # a second to import: only the reconstruction's grids need it

    grid = make_grid(rows.reshape(-1, 3, side, side), nrow=rows.shape[1], padding=padding, pad_value=1.0)
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def write_grid(path: Path, crops01: torch.Tensor, samples: list[torch.Tensor]) -> None:
    """:func:`grid_image` as a PNG at ``path``, written atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(grid_image(crops01, samples)).save(tmp, format="PNG")
