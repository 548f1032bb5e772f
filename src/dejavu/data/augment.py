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
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - MEAN.to(images.device)) / STD.to(images.device)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_resized_crop(
    images: torch.Tensor, size: int, scale: tuple[float, float], flip_p: float, generator: torch.Generator
) -> torch.Tensor:
    """Per-sample random resized crop (area fraction in ``scale``, aspect 3/4..4/3) and h-flip.

    images: float (N, 3, H, W) -> (N, 3, size, size).
    """
    n = images.shape[0]
    area = _uniform(n, scale[0], scale[1], generator)
    log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), generator)
    ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * ratio).clamp(max=1.0)
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator) < flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta.to(images.device), [n, 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(
    images: torch.Tensor, strength: list[float], p: float, generator: torch.Generator
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter with per-sample factors, applied with prob. ``p``."""
    n = images.shape[0]
    brightness, contrast, saturation, hue = strength
    apply = (torch.rand(n, generator=generator) < p).float().view(n, 1, 1, 1)
    b = _uniform(n, 1 - brightness, 1 + brightness, generator).view(n, 1, 1, 1)
    c = _uniform(n, 1 - contrast, 1 + contrast, generator).view(n, 1, 1, 1)
    s = _uniform(n, 1 - saturation, 1 + saturation, generator).view(n, 1, 1, 1)
    h = _uniform(n, -hue, hue, generator) * 2 * math.pi
    out = images * b
    grey_mean = (out * _GRAY.to(out.device)).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    out = (out - grey_mean) * c + grey_mean
    grey = (out * _GRAY.to(out.device)).sum(1, keepdim=True)
    out = (out - grey) * s + grey
    out = _rotate_hue(out, h)
    out = out.clamp(0.0, 1.0)
    return apply * out + (1 - apply) * images


def _rotate_hue(images: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Hue rotation as a rotation of the chroma plane in YIQ space (per-sample angle in radians)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    to_rgb = torch.linalg.inv(to_yiq)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(angle), 3, 3)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    matrix = (to_rgb @ rotation @ to_yiq).to(images.device)
    return torch.einsum("nij,njhw->nihw", matrix, images)


def random_grayscale(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    n = images.shape[0]
    apply = (torch.rand(n, generator=generator) < p).float().view(n, 1, 1, 1)
    grey = (images * _GRAY.to(images.device)).sum(1, keepdim=True).expand_as(images)
    return apply * grey + (1 - apply) * images


def ssl_view(images: torch.Tensor, size: int, augment, generator: torch.Generator) -> torch.Tensor:
    """One augmented, normalised view of a float (N, 3, H, W) batch (``augment``: AugmentConfig)."""
    view = random_resized_crop(images, size, tuple(augment.crop_scale), augment.flip_p, generator)
    view = colour_jitter(view, augment.jitter, augment.jitter_p, generator)
    view = random_grayscale(view, augment.grayscale_p, generator)
    return normalise(view)


def eval_images(images_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """Full images as the models see them at evaluation: resized to ``size``, normalised."""
    images = to_float(images_uint8)
    images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return normalise(images)


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
        out[rows] = F.interpolate(patches, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return normalise(out)
