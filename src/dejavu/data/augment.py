"""Batched SSL augmentation on tensors, and the evaluation transforms for images and crops.

Augmentations run on whole batches with per-sample parameters (one ``grid_sample`` for the random
resized crop and flip, closed-form colour jitter), on whatever device holds the batch, so that
training is never bound by per-image PIL work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Fixed normalisation: the built-in images are roughly centred on mid-grey.
MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
STD = torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)
_GRAY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> contiguous float (N, 3, H, W) in [0, 1].

    Contiguous (the uint8 is reordered, 1 byte a value): grid_sample reads a channels-first batch
    1.5x faster than the permuted view, with bitwise the same result.
    """
    return images.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - MEAN.to(images.device)) / STD.to(images.device)


# A distributed run draws every random parameter for the whole global batch on every process (the
# generators agree) and keeps its own rows `part = (start, total)`: the views are then the same as one
# process would make, whatever the number of processes.
Part = tuple[int, int] | None


def _rand(n: int, generator: torch.Generator, part: Part) -> torch.Tensor:
    if part is None:
        return torch.rand(n, generator=generator)
    start, total = part
    return torch.rand(total, generator=generator)[start : start + n]


def _uniform(n: int, low: float, high: float, generator: torch.Generator, part: Part = None) -> torch.Tensor:
    return low + (high - low) * _rand(n, generator, part)


def _crop_grid(
    n: int, size: int, scale: tuple[float, float], flip_p: float, generator: torch.Generator, part: Part,
) -> torch.Tensor:
    """Sampling grid (n, size, size, 2) of a per-sample random resized crop (area fraction in ``scale``,
    aspect 3/4..4/3) and horizontal flip, in grid_sample's normalised coordinates.

    Built directly: x depends only on the column, y only on the row, so this is two outer products
    rather than affine_grid's batched matrix product over every pixel.
    """
    area = _uniform(n, scale[0], scale[1], generator, part)
    log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), generator, part)
    ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * ratio).clamp(max=1.0)
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (_rand(n, generator, part) * 2 - 1) * (1 - width)
    centre_y = (_rand(n, generator, part) * 2 - 1) * (1 - height)
    flip = torch.where(_rand(n, generator, part) < flip_p, -1.0, 1.0)
    pixel_centres = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1  # align_corners=False
    x = (width * flip)[:, None] * pixel_centres[None, :] + centre_x[:, None]
    y = height[:, None] * pixel_centres[None, :] + centre_y[:, None]
    return torch.stack([x[:, None, :].expand(n, size, size), y[:, :, None].expand(n, size, size)], dim=-1)


def random_resized_crop(
    images: torch.Tensor, size: int, scale: tuple[float, float], flip_p: float, generator: torch.Generator,
    part: Part = None,
) -> torch.Tensor:
    """Per-sample random resized crop and h-flip: float (N, 3, H, W) -> (N, 3, size, size)."""
    grid = _crop_grid(images.shape[0], size, scale, flip_p, generator, part).to(images.device)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_TO_RGB = torch.linalg.inv(_TO_YIQ)
_EYE = torch.eye(3)
# Replacing every channel by the grey value is a 3x3 matrix too.
_TO_GREY = _GRAY.view(1, 3).expand(3, 3)


def _jitter_affine(
    images: torch.Tensor, strength: list[float], p: float, generator: torch.Generator, part: Part,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour jitter as one per-sample affine map ``x -> M x + o`` (M: (n, 3, 3), o: (n, 1, 1)).

    Brightness (x b), contrast (towards the image's mean grey), saturation (towards each pixel's grey)
    and hue (a rotation of the chroma plane in YIQ space) are each linear in the colour, so their
    composition is one matrix plus the contrast's offset: grey stays grey under saturation and hue,
    hence the offset is the same on every channel. Samples not jittered get the identity.
    """
    n = images.shape[0]
    brightness, contrast, saturation, hue = strength
    apply = _rand(n, generator, part) < p
    b = _uniform(n, 1 - brightness, 1 + brightness, generator, part)
    c = _uniform(n, 1 - contrast, 1 + contrast, generator, part)
    s = _uniform(n, 1 - saturation, 1 + saturation, generator, part)
    angle = _uniform(n, -hue, hue, generator, part) * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(n, 3, 3)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    hue_matrix = _TO_RGB @ rotation @ _TO_YIQ
    saturate = s.view(n, 1, 1) * _EYE + (1 - s).view(n, 1, 1) * _TO_GREY
    matrix = (c * b).view(n, 1, 1) * (hue_matrix @ saturate)
    matrix = torch.where(apply.view(n, 1, 1), matrix, _EYE)
    # The image's mean grey: the only statistic of the pixels that the jitter needs.
    mean_grey = (images * _GRAY.to(images.device)).sum(1).mean(dim=(1, 2)).cpu()
    offset = torch.where(apply, (1 - c) * b * mean_grey, 0.0).view(n, 1, 1)
    return matrix.to(images.device), offset.to(images.device)


def _apply_colour(images: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return torch.baddbmm(offset, matrix, images.reshape(images.shape[0], 3, -1)).view_as(images)


def colour_jitter(
    images: torch.Tensor, strength: list[float], p: float, generator: torch.Generator, part: Part = None
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter with per-sample factors, applied with prob. ``p``;
    the result is clamped to [0, 1]."""
    return _apply_colour(images, *_jitter_affine(images, strength, p, generator, part)).clamp_(0.0, 1.0)


def _greyscale_matrix(n: int, p: float, generator: torch.Generator, part: Part) -> torch.Tensor:
    apply = _rand(n, generator, part) < p
    return torch.where(apply.view(n, 1, 1), _TO_GREY, _EYE)


def random_grayscale(images: torch.Tensor, p: float, generator: torch.Generator, part: Part = None) -> torch.Tensor:
    """Each image replaced by its grey version with probability ``p``."""
    matrix = _greyscale_matrix(images.shape[0], p, generator, part).to(images.device)
    return _apply_colour(images, matrix, torch.zeros(1, 1, 1, device=images.device))


def ssl_view(
    images: torch.Tensor, size: int, augment, generator: torch.Generator, part: Part = None,
    scale: tuple[float, float] | None = None,
) -> torch.Tensor:
    """One augmented, normalised view of a float (N, 3, H, W) batch (``augment``: AugmentConfig).

    Crop and flip, colour jitter, random greyscale, normalisation: one grid_sample and two 3x3
    matrix products per pixel (greyscale and normalisation fold into the second), which is what
    keeps augmentation a small fraction of a training step (benchmarks/train_step.py).
    ``part = (start, total)``: these N images are rows start.. of a global batch of ``total``;
    ``scale`` overrides the crop's area range (DINO's small local crops).
    """
    n = images.shape[0]
    view = random_resized_crop(images, size, tuple(scale or augment.crop_scale), augment.flip_p, generator, part)
    view = colour_jitter(view, augment.jitter, augment.jitter_p, generator, part)
    grey = _greyscale_matrix(n, augment.grayscale_p, generator, part)
    # normalise(G y) = diag(1/std) G y - mean/std
    inverse_std = (1.0 / STD).view(1, 3, 1)
    matrix = (inverse_std * grey).to(view.device)
    offset = (-MEAN / STD).view(1, 3, 1).to(view.device)
    return torch.baddbmm(offset, matrix, view.reshape(n, 3, -1)).view_as(view)


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float (N, 3, h, w) images resized to ``size`` x ``size`` (bilinear, antialiased; as they are when already
    that size), the one resize of full images for the models, the judge and the decoders."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def eval_images(images_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """Full images as the models see them at evaluation: resized to ``size``, normalised."""
    return normalise(resized(to_float(images_uint8), size))


def eval_crops(images_uint8: torch.Tensor, squares: torch.Tensor, size: int) -> torch.Tensor:
    """Square periphery crops (``squares``: int (N, 4) half-open xyxy) resized to ``size``, normalised.

    Kept square (the centre square of the box-free rectangle) so the background's detail is
    not distorted by squashing a long strip.
    """
    out = torch.empty(len(squares), 3, size, size)
    images = to_float(images_uint8)
    for side in torch.unique(squares[:, 2] - squares[:, 0]).tolist():
        # Same-sized crops are resized together: one interpolate call per distinct side.
        rows = torch.nonzero(squares[:, 2] - squares[:, 0] == side).flatten()
        patches = torch.stack(
            [images[r, :, squares[r, 1] : squares[r, 3], squares[r, 0] : squares[r, 2]] for r in rows.tolist()]
        )
        out[rows] = resized(patches, size)
    return normalise(out)
