"""The built-in captioned dataset ``captioned_scenes``: several objects per image and a caption that never
names them all, for the vision-language (CLIP) test.

An image is a ``scenes`` background (its scene type, per-image gratings and motif) with 2 to 4 objects of
distinct classes on distinct cells of a 3 x 3 grid. The first object is the image's class (balanced per
class, as in ``scenes``); the others are drawn among the scene's three companion classes with probability
``scene_correlation`` (the dataset-level correlation a reference model learns too), else among all classes.
The caption names the scene and ``caption_objects`` of the objects with their size and grid cell, so a
model can reveal the unnamed objects of a training image only by remembering that image. Image ``i``
depends only on (seed, i).
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from dejavu.data.records import ImageTable, Record
from dejavu.data.scenes import ScenesDataset

SCENE_WORDS = ("beach", "forest", "desert", "snowfield", "city", "meadow", "lake", "canyon", "farm", "harbour")
CELL_WORDS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")
COMPANIONS = 3


class CaptionedScenes(ScenesDataset):
    """Procedural multi-object images with boxes, object sets and template captions.

    Example:
        >>> ds = CaptionedScenes(n_classes=10, images_per_class=4, image_size=64, seed=0)
        >>> record, objects, caption = ds.render_captioned(0)
        >>> record.boxes.shape[0] == objects.sum() >= 2, caption.startswith("a ")
        (True, True)
    """

    def __init__(self, n_classes: int = 10, images_per_class: int = 100, image_size: int = 64, seed: int = 0,
                 scene_correlation: float = 0.5, background_detail: bool = True,
                 object_scale: tuple[float, float] = (0.22, 0.32), objects: tuple[int, int] = (2, 4),
                 caption_objects: int = 1):
        super().__init__(n_classes, images_per_class, image_size, seed, scene_correlation, background_detail,
                         object_scale)
        low, high = objects
        if not 1 <= caption_objects < low <= high <= min(len(CELL_WORDS), n_classes):
            raise ValueError(f"objects {objects} and caption_objects {caption_objects}: expected 1 <= caption_objects "
                             f"< objects[0] <= objects[1] <= min(9, n_classes)")
        self.objects = (low, high)
        self.caption_objects = caption_objects
        self.scene_names = [SCENE_WORDS[s % len(SCENE_WORDS)] + (f" {s // len(SCENE_WORDS)}" if s >= len(SCENE_WORDS) else "")
                            for s in range(n_classes)]

    def _classes(self, rng: np.random.Generator, label: int, scene: int) -> list[int]:
        count = int(rng.integers(self.objects[0], self.objects[1] + 1))
        chosen = [label]
        companions = [(scene + offset) % self.n_classes for offset in range(1, COMPANIONS + 1)]
        while len(chosen) < count:
            pool = companions if rng.random() < self.scene_correlation else range(self.n_classes)
            free = [c for c in pool if c not in chosen]
            if free:
                chosen.append(int(rng.choice(free)))
        return chosen

    def render_captioned(self, index: int) -> tuple[Record, np.ndarray, str]:
        """The record (label: the first object; boxes: every object's), its bool (C,) object set, its caption."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        label = index // self.images_per_class
        rng = np.random.default_rng([self.seed, index, 1])
        scene = label if rng.random() < self.scene_correlation else int(rng.integers(self.n_classes))
        image = self.background(rng, scene)
        classes = self._classes(rng, label, scene)
        cells = rng.choice(len(CELL_WORDS), size=len(classes), replace=False)
        n, third = self.size, self.size / 3
        boxes, phrases = [], []
        for cls, cell in zip(classes, cells):
            low, high = self.object_scale
            radius = rng.uniform(low, high) * n / 2
            jitter = rng.uniform(-third / 6, third / 6, 2)
            cx = float(np.clip((cell % 3 + 0.5) * third + jitter[0], radius, n - radius))
            cy = float(np.clip((cell // 3 + 0.5) * third + jitter[1], radius, n - radius))
            image, mask = self.draw_object(image, rng, cls, (2 * radius / n, 2 * radius / n), centre=(cx, cy))
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
            size = "large" if radius > (low + high) * n / 4 else "small"
            phrases.append(f"a {size} {self.class_names[cls]} at the {CELL_WORDS[cell]}")
        named = sorted(rng.choice(len(classes), size=self.caption_objects, replace=False))
        caption = f"a {self.scene_names[scene]} scene with " + " and ".join(phrases[i] for i in named)
        objects = np.zeros(self.n_classes, dtype=bool)
        objects[classes] = True
        pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        record = Record(pixels, label, np.array(boxes, dtype=np.float32), f"captioned-{index:06d}")
        return record, objects, caption

    def table(self, progress: bool = False) -> ImageTable:
        """All images as one :class:`ImageTable` with ``objects`` and ``captions``."""
        indices = range(len(self))
        if progress:
            indices = tqdm(indices, desc="generate captioned scenes", unit="img", mininterval=1.0, dynamic_ncols=True)
        rendered = [self.render_captioned(i) for i in indices]
        table = ImageTable.from_records([record for record, _, _ in rendered], self.class_names)
        table.objects = np.stack([objects for _, objects, _ in rendered])
        table.captions = np.array([caption for _, _, caption in rendered])
        return table
