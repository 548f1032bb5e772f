"""A score of reconstructions that needs no classifier, on the built-in scenes: the object's colour.

Every class of ``scenes`` paints its object in one saturated hue (its stripes only darken it), while the
sky, ground and grating are muted. A reconstruction's colour label is the class whose hue most of its
saturated, bright pixels are nearest to; it is right when that is the crop's class. The whole
reconstruction is read, not the original box: the decoder draws the object where it chooses.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch

# Object pixels have saturation 0.85 and value 0.76-0.95 (scenes.py); the muted backgrounds stay below.
MIN_SATURATION = 0.65
MIN_VALUE = 0.5
# A reconstruction with fewer object-coloured pixels than this share shows no object: label -1.
MIN_SHARE = 0.02


def class_hues(class_colours: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """float (C,) hues in [0, 1) of the classes' RGB colours in [0, 1]."""
    return np.array([colorsys.rgb_to_hsv(*map(float, rgb))[0] for rgb in np.asarray(class_colours)])


def _hsv(images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = images01.unbind(dim=1)
    high, low = images01.max(dim=1).values, images01.min(dim=1).values
    span = high - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    hue = torch.where(high == r, ((g - b) / safe) % 6, torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4))
    saturation = torch.where(high > 0, span / torch.where(high > 0, high, torch.ones_like(high)), torch.zeros_like(high))
    return hue / 6, saturation, high


def colour_labels(images01: torch.Tensor, hues: np.ndarray) -> np.ndarray:
    """int (N,): for each image (float (N, 3, s, s) in [0, 1]) the class (index into ``hues``) of most of
    its object-coloured pixels, -1 when under :data:`MIN_SHARE` of its pixels are object-coloured.

    Example:
        >>> red = torch.zeros(1, 3, 4, 4); red[:, 0] = 0.9
        >>> colour_labels(red, np.array([0.5, 0.0])).tolist()
        [1]
    """
    if not len(images01):
        return np.zeros(0, dtype=np.int64)
    hue, saturation, value = _hsv(images01.float())
    object_like = (saturation >= MIN_SATURATION) & (value >= MIN_VALUE)
    centres = torch.as_tensor(np.asarray(hues, np.float32))
    distance = (hue[..., None] - centres).abs()
    distance = torch.minimum(distance, 1 - distance)  # hue is circular
    nearest = distance.argmin(dim=-1)
    n = len(centres)
    counts = torch.stack([((nearest == c) & object_like).flatten(1).sum(dim=1) for c in range(n)], dim=1)
    labels = counts.argmax(dim=1).numpy().astype(np.int64)
    share = object_like.flatten(1).float().mean(dim=1).numpy()
    return np.where(share >= MIN_SHARE, labels, -1)
