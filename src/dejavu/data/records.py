"""The record every dataset yields, and the array form stages exchange on disk."""

from __future__ import annotations

from dataclasses import dataclass

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
    """Many records as aligned arrays (what ``data/dataset.npz`` holds).

    images: uint8 (N, H, W, 3); labels: int64 (N,); boxes: float32 (N, M, 4) padded with NaN rows;
    ids: unicode (N,); class_names: unicode (C,).
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    ids: np.ndarray
    class_names: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def boxes_of(self, index: int) -> np.ndarray:
        rows = self.boxes[index]
        return rows[~np.isnan(rows).any(axis=1)]

    def record(self, index: int) -> Record:
        return Record(self.images[index], int(self.labels[index]), self.boxes_of(index), str(self.ids[index]))

    def to_npz_arrays(self) -> dict[str, np.ndarray]:
        return {
            "images": self.images, "labels": self.labels, "boxes": self.boxes,
            "ids": self.ids, "class_names": self.class_names,
        }

    @classmethod
    def from_records(cls, records: list[Record], class_names: list[str]) -> "ImageTable":
        most = max([len(r.boxes) for r in records] + [1])
        boxes = np.full((len(records), most, 4), np.nan, dtype=np.float32)
        for i, r in enumerate(records):
            boxes[i, : len(r.boxes)] = r.boxes
        return cls(
            images=np.stack([r.image for r in records]).astype(np.uint8),
            labels=np.array([r.label for r in records], dtype=np.int64),
            boxes=boxes,
            ids=np.array([r.id for r in records]),
            class_names=np.array(class_names),
        )


def index_of_ids(table_ids: np.ndarray, wanted: np.ndarray, what: str = "ids") -> np.ndarray:
    """Positions of ``wanted`` ids in ``table_ids`` (a join on ids; raises on a missing id)."""
    lookup = {str(identifier): position for position, identifier in enumerate(table_ids)}
    if len(lookup) != len(table_ids):
        raise ValueError(f"{what}: duplicate ids in the table")
    try:
        return np.array([lookup[str(identifier)] for identifier in wanted], dtype=np.int64)
    except KeyError as exc:
        raise KeyError(f"{what}: id {exc.args[0]!r} not found") from None
