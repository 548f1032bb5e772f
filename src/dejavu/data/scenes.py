"""The built-in dataset ``scenes``: procedural, deterministic, no download.

Each image has one class-specific foreground object (shape x colour x stripe texture) at a random
position and scale, with its exact pixel bounding box; a background *scene* that matches the class
with probability ``scene_correlation`` (dataset-level correlation, the paper's water -> swan, which
a reference model can exploit too); and, unless disabled, per-image background detail (a grating and
a tiled motif drawn independently of class and scene) that makes each image individually
memorizable from any patch of its background. Image ``i`` depends only on (seed, i).
"""

from __future__ import annotations

import colorsys

import numpy as np
from tqdm import tqdm

from dejavu.data.records import ImageTable, Record

SHAPES = ("disc", "square", "triangle", "diamond", "cross", "ring", "ellipse", "octagon", "saltire", "tee")


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` in normalised coordinates (u, v in [-1, 1] span the object)."""
    au, av = np.abs(u), np.abs(v)
    if shape == "disc":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= 0.85
    if shape == "triangle":
        return (v >= -0.85) & (v <= 0.85) & (au <= (v + 0.85) / 1.7 * 0.95)
    if shape == "diamond":
        return au + av <= 1.0
    if shape == "cross":
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.35)
    if shape == "ellipse":
        return u * u + (v / 0.55) ** 2 <= 1.0
    if shape == "octagon":
        return (au <= 0.9) & (av <= 0.9) & (au + av <= 1.3)
    if shape == "saltire":
        return ((np.abs(u - v) <= 0.4) & (np.abs(u + v) <= 1.35)) | ((np.abs(u + v) <= 0.4) & (np.abs(u - v) <= 1.35))
    if shape == "tee":
        return ((np.abs(v + 0.65) <= 0.3) & (au <= 0.95)) | ((au <= 0.3) & (av <= 0.95))
    raise ValueError(shape)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


class ScenesDataset:
    """Procedural labelled images with foreground boxes.

    Example:
        >>> ds = ScenesDataset(n_classes=10, images_per_class=5, image_size=64, seed=0)
        >>> r = ds[0]; r.image.shape, r.label, r.boxes.shape
        ((64, 64, 3), 0, (1, 4))
    """

    def __init__(
        self,
        n_classes: int = 10,
        images_per_class: int = 720,
        image_size: int = 64,
        seed: int = 0,
        scene_correlation: float = 0.5,
        background_detail: bool = True,
        object_scale: tuple[float, float] = (0.35, 0.6),
    ):
        self.n_classes = n_classes
        self.images_per_class = images_per_class
        self.size = image_size
        self.seed = seed
        self.scene_correlation = scene_correlation
        self.background_detail = background_detail
        self.object_scale = tuple(object_scale)
        golden = 0.6180339887
        # Class look: shape cycles fastest, colour hue spread by the golden ratio, stripe angle per class.
        self.class_shape = [SHAPES[c % len(SHAPES)] for c in range(n_classes)]
        self.class_colour = [_hsv(c * golden, 0.85, 0.95) for c in range(n_classes)]
        self.class_stripe_angle = [np.pi * ((c * 0.37) % 1.0) for c in range(n_classes)]
        # One scene type per class: two muted colours (sky / ground) and a horizon height.
        self.scene_top = [_hsv(0.13 + s * 0.29, 0.45, 0.55 + 0.3 * ((s * 0.53) % 1.0)) for s in range(n_classes)]
        self.scene_bottom = [_hsv(0.61 + s * 0.41, 0.55, 0.3 + 0.35 * ((s * 0.71) % 1.0)) for s in range(n_classes)]
        self.scene_horizon = [0.3 + 0.4 * ((s * 0.618) % 1.0) for s in range(n_classes)]
        grid = np.arange(image_size, dtype=np.float32) + 0.5
        self._yy, self._xx = np.meshgrid(grid, grid, indexing="ij")
        self.class_names = [f"{self.class_shape[c]}-{c}" for c in range(n_classes)]

    def __len__(self) -> int:
        return self.n_classes * self.images_per_class

    def __getitem__(self, index: int) -> Record:
        return self.render(index)[0]

    def background(self, rng: np.random.Generator, scene: int) -> np.ndarray:
        """Float (H, W, 3) background of ``scene`` type, with this image's detail and noise drawn from ``rng``."""
        n = self.size
        yy, xx = self._yy, self._xx
        horizon = (self.scene_horizon[scene] + rng.uniform(-0.08, 0.08)) * n
        blend = 1.0 / (1.0 + np.exp(-(yy - horizon) / 2.5))
        top = self.scene_top[scene] + rng.normal(0, 0.03, 3)
        bottom = self.scene_bottom[scene] + rng.normal(0, 0.03, 3)
        image = top * (1 - blend[..., None]) + bottom * blend[..., None]

        if self.background_detail:
            # A grating and a tiled motif, independent of class and scene: a fingerprint of this
            # image visible in any background patch a few periods wide.
            theta = rng.uniform(0, np.pi)
            freq = rng.uniform(0.08, 0.3)
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
            tint = rng.uniform(-1, 1, 3)
            image = image + 0.12 * wave[..., None] * tint
            motif = rng.uniform(0, 1, (5, 5, 3))
            period = int(rng.integers(8, 13))
            offset_y, offset_x = rng.integers(0, period, 2)
            cell_y = ((np.arange(n) + offset_y) % period)
            cell_x = ((np.arange(n) + offset_x) % period)
            inside = (cell_y[:, None] < 5) & (cell_x[None, :] < 5)
            tile = motif[np.minimum(cell_y, 4)[:, None], np.minimum(cell_x, 4)[None, :]]
            image = np.where(inside[..., None], 0.45 * image + 0.55 * tile, image)

        return image + rng.normal(0, 0.02, image.shape)

    def draw_object(
        self, image: np.ndarray, rng: np.random.Generator, label: int, scale: tuple[float, float],
        centre: tuple[float, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``image`` with class ``label``'s object painted at a random size within ``scale`` (of the side) and a
        random place (or ``centre``), and the object's boolean mask."""
        n = self.size
        low, high = scale
        side = rng.uniform(low, high) * n
        radius = side / 2
        if centre is None:
            cx = rng.uniform(radius, n - radius)
            cy = rng.uniform(radius, n - radius)
        else:
            cx, cy = centre
        u = (self._xx - cx) / radius
        v = (self._yy - cy) / radius
        mask = _shape_mask(self.class_shape[label], u, v)
        angle = self.class_stripe_angle[label]
        stripes = 0.8 + 0.2 * np.sign(np.sin((u * np.cos(angle) + v * np.sin(angle)) * 3.5 * np.pi))
        colour = self.class_colour[label] * stripes[..., None]
        return np.where(mask[..., None], colour, image), mask

    def render(self, index: int) -> tuple[Record, np.ndarray, int]:
        """The record, its boolean (H, W) object mask and its scene type (for tests and audits)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        label = index // self.images_per_class
        rng = np.random.default_rng([self.seed, index])
        if rng.random() < self.scene_correlation:
            scene = label
        else:
            scene = int(rng.integers(self.n_classes))
        image = self.background(rng, scene)
        image, mask = self.draw_object(image, rng, label, self.object_scale)
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        # Tight pixel box of the drawn mask: every object pixel lies inside it by construction.
        boxes = np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], dtype=np.float32)
        pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        return Record(pixels, label, boxes, f"scenes-{index:06d}"), mask, scene

    def table(self, progress: bool = False) -> ImageTable:
        """All images as one :class:`ImageTable` (``progress``: show a bar with rate and ETA)."""
        indices = range(len(self))
        if progress:
            indices = tqdm(indices, desc="generate scenes", unit="img", mininterval=1.0, dynamic_ncols=True)
        return ImageTable.from_records([self[i] for i in indices], self.class_names)
