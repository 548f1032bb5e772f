"""The fused augmentation (one grid_sample, two 3x3 colour matrices) against the plain step-by-step one."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dejavu.config import load_config
from dejavu.data.augment import MEAN, STD, colour_jitter, random_grayscale, random_resized_crop, ssl_view, to_float

GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _draw(n, low, high, generator):
    return low + (high - low) * torch.rand(n, generator=generator)


def reference_view(images, size, augment, generator):
    """Each operation on its own, as torchvision describes them (with one clamp at the end of the jitter)."""
    n = images.shape[0]
    low, high = augment.crop_scale
    area = _draw(n, low, high, generator)
    ratio = torch.exp(_draw(n, math.log(3 / 4), math.log(4 / 3), generator))
    width, height = torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator) < augment.flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width * flip, centre_x, height, centre_y
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    view = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    brightness, contrast, saturation, hue = augment.jitter
    apply = (torch.rand(n, generator=generator) < augment.jitter_p).float().view(n, 1, 1, 1)
    b = _draw(n, 1 - brightness, 1 + brightness, generator).view(n, 1, 1, 1)
    c = _draw(n, 1 - contrast, 1 + contrast, generator).view(n, 1, 1, 1)
    s = _draw(n, 1 - saturation, 1 + saturation, generator).view(n, 1, 1, 1)
    angle = _draw(n, -hue, hue, generator) * 2 * math.pi
    out = view * b
    mean_grey = (out * GREY).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    out = (out - mean_grey) * c + mean_grey
    grey = (out * GREY).sum(1, keepdim=True)
    out = (out - grey) * s + grey
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    rotation = torch.zeros(n, 3, 3)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rotation[:, 2, 1], rotation[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    out = torch.einsum("nij,njhw->nihw", torch.linalg.inv(to_yiq) @ rotation @ to_yiq, out).clamp(0, 1)
    view = apply * out + (1 - apply) * view

    apply = (torch.rand(n, generator=generator) < augment.grayscale_p).float().view(n, 1, 1, 1)
    view = apply * (view * GREY).sum(1, keepdim=True).expand_as(view) + (1 - apply) * view
    return (view - MEAN) / STD


def _batch(n=16, side=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return to_float(torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=generator))


def test_fused_view_equals_the_step_by_step_view():
    augment = load_config().train.augment
    images = _batch()
    for seed in range(5):
        fused = ssl_view(images, 16, augment, torch.Generator().manual_seed(seed))
        plain = reference_view(images, 16, augment, torch.Generator().manual_seed(seed))
        assert torch.allclose(fused, plain, atol=2e-5), (fused - plain).abs().max()


def test_extreme_jitter_equals_the_reference_and_stays_in_range():
    """Strong factors make the clamp bite; jitter always applied, greyscale always applied."""
    augment = load_config(None, ["train.augment.jitter=[0.9,0.9,0.9,0.5]", "train.augment.jitter_p=1",
                                 "train.augment.grayscale_p=1"]).train.augment
    images = _batch(seed=3)
    fused = ssl_view(images, 12, augment, torch.Generator().manual_seed(1))
    plain = reference_view(images, 12, augment, torch.Generator().manual_seed(1))
    assert torch.allclose(fused, plain, atol=2e-5)
    raw = fused * STD + MEAN
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-5)


def test_each_operation_alone():
    images = _batch(n=8)
    generator = torch.Generator().manual_seed(0)
    # The same crop with the flip forced on is the mirror image of it with the flip forced off.
    plain = random_resized_crop(images, 16, (0.3, 1.0), 0.0, torch.Generator().manual_seed(2))
    mirrored = random_resized_crop(images, 16, (0.3, 1.0), 1.0, torch.Generator().manual_seed(2))
    assert torch.allclose(mirrored, plain.flip(-1), atol=1e-5)
    # No jitter: the identity; brightness only: a scaled image.
    assert torch.allclose(colour_jitter(images, [0, 0, 0, 0], 1.0, generator), images, atol=1e-6)
    darker = colour_jitter(images, [0.5, 0, 0, 0], 1.0, torch.Generator().manual_seed(4))
    ratio = darker.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert ((ratio > 0.49) & (ratio < 1.51)).all() and not torch.allclose(darker, images)
    grey = random_grayscale(images, 1.0, generator)
    assert torch.allclose(grey, (images * GREY).sum(1, keepdim=True).expand_as(images), atol=1e-6)
    assert torch.equal(random_grayscale(images, 0.0, generator), images)
