"""The record every dataset yields, and the array form stages exchange on disk."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Record:
    """One labelled image.

    image: uint8 (H, W, 3); label: class index; boxes: float (m, 4) pixel xyxy of the
    foreground objects (m may be 0); id: a string unique within the dataset.
    """

    image: np.ndarray
    label: int
    boxes: np.ndarray
    id: str


@dataclass
class ImageTable:
    """Many records as aligned arrays (``data/catalog.npz`` plus the pixel cache ``data/images.npy``).

    images: uint8 (N, S, S, 3), every image squashed to S x S (None when a file dataset runs without
    the cache); labels: int64 (N,); boxes: float32 (N, M, 4) in each image's full-resolution pixels,
    padded with NaN rows; ids: unicode (N,); class_names: unicode (C,); sizes: int64 (N, 2) full
    (width, height); paths: unicode (N,) image files ("" for generated images); content_hashes:
    unicode (N,) SHA-256 of the file (of the pixels for generated images); perceptual_hashes: uint64 (N,).
    Captioned data (the vision-language test) adds objects: bool (N, C), every object class an image holds,
    and captions: unicode (N,); None elsewhere.
    """

    images: np.ndarray | None
    labels: np.ndarray
    boxes: np.ndarray
    ids: np.ndarray
    class_names: np.ndarray
    sizes: np.ndarray = field(default=None)  # type: ignore[assignment]
    paths: np.ndarray = field(default=None)  # type: ignore[assignment]
    content_hashes: np.ndarray = field(default=None)  # type: ignore[assignment]
    perceptual_hashes: np.ndarray = field(default=None)  # type: ignore[assignment]
    objects: np.ndarray | None = None
    captions: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.sizes is None:
            height, width = self.images.shape[1:3]
            self.sizes = np.tile(np.array([[width, height]], dtype=np.int64), (n, 1))
        if self.paths is None:
            self.paths = np.array([""] * n)
        if self.content_hashes is None:
            self.content_hashes = np.array([""] * n)
        if self.perceptual_hashes is None:
            self.perceptual_hashes = np.zeros(n, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.ids)

    def boxes_of(self, index: int) -> np.ndarray:
        rows = self.boxes[index]
        return rows[~np.isnan(rows).any(axis=1)]

    def record(self, index: int) -> Record:
        return Record(self.images[index], int(self.labels[index]), self.boxes_of(index), str(self.ids[index]))

    @property
    def boxed(self) -> np.ndarray:
        """bool (N,): the image has at least one foreground box (only those can be attacked)."""
        return (~np.isnan(self.boxes).any(axis=2)).any(axis=1)

    def catalog_arrays(self) -> dict[str, np.ndarray]:
        """Everything but the pixels (what ``data/catalog.npz`` holds)."""
        return {
            "labels": self.labels, "boxes": self.boxes, "ids": self.ids, "class_names": self.class_names,
            "sizes": self.sizes, "paths": self.paths, "content_hashes": self.content_hashes,
            "perceptual_hashes": self.perceptual_hashes,
            **({"objects": self.objects, "captions": self.captions} if self.captions is not None else {}),
        }

    @classmethod
    def from_records(cls, records: list[Record], class_names: list[str]) -> "ImageTable":
        return cls(
            images=np.stack([r.image for r in records]).astype(np.uint8),
            labels=np.array([r.label for r in records], dtype=np.int64),
            boxes=pad_boxes([r.boxes for r in records]),
            ids=np.array([r.id for r in records]),
            class_names=np.array(class_names),
        )


def pad_boxes(per_image: list[np.ndarray]) -> np.ndarray:
    """Each image's (m, 4) boxes as one float32 (N, max m, 4) array padded with NaN rows (see ``boxes_of``)."""
    most = max([len(boxes) for boxes in per_image] + [1])
    padded = np.full((len(per_image), most, 4), np.nan, dtype=np.float32)
    for row, boxes in enumerate(per_image):
        padded[row, : len(boxes)] = boxes
    return padded


def index_of_ids(table_ids: np.ndarray, wanted: np.ndarray, what: str = "ids") -> np.ndarray:
    """Positions of ``wanted`` ids in ``table_ids`` (a join on ids; raises on a missing id)."""
    lookup = {str(identifier): position for position, identifier in enumerate(table_ids)}
    if len(lookup) != len(table_ids):
        raise ValueError(f"{what}: duplicate ids in the table")
    try:
        return np.array([lookup[str(identifier)] for identifier in wanted], dtype=np.int64)
    except KeyError as exc:
        raise KeyError(f"{what}: id {exc.args[0]!r} not found") from None
