"""Where training and embedding read pixels from: the cache array, or the files through DataLoader workers.

Both sources hand out uint8 (B, S, S, 3) tensors for lists of rows, in the order asked, so the
training loop draws the same batches (and the same numbers) whichever source backs it.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from dejavu.data.augment import eval_crops
from dejavu.data.decode import CropImages, DecodedImages
from dejavu.data.records import ImageTable
from dejavu.errors import DataError


class ArraySource:
    """Rows of a uint8 (N, S, S, 3) array or memory map (the pixel cache, or generated images)."""

    def __init__(self, images: np.ndarray, rows: np.ndarray | None = None):
        self.images = images
        self.rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, chunks: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        for chunk in chunks:
            selected = self.rows[np.asarray(chunk, dtype=np.int64)]
            # Sorted reads are sequential on a memory map; the batch keeps the requested order.
            order = np.argsort(selected, kind="stable")
            block = np.empty((len(selected), *self.images.shape[1:]), dtype=np.uint8)
            block[order] = self.images[selected[order]]
            yield torch.from_numpy(block)


class FileSource:
    """The same rows decoded from their files every time (``data.cache: false``), by ``workers`` processes."""

    def __init__(self, paths: np.ndarray, size: int, workers: int):
        self.paths = np.asarray(paths)
        self.size = size
        self.workers = workers

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self, chunks: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        chunks = [np.asarray(c, dtype=np.int64).tolist() for c in chunks]
        loader = torch.utils.data.DataLoader(
            DecodedImages(self.paths, self.size, hashes=False), batch_sampler=chunks, num_workers=self.workers, collate_fn=list,
        )
        for items in decoded_batches(loader):
            yield torch.from_numpy(np.stack([item.pixels for item in items]))


def decoded_batches(loader: torch.utils.data.DataLoader) -> Iterator[list]:
    """The items of each ``(index, item or error message)`` batch; the first error becomes a DataError."""
    for batch in loader:
        errors = [item for _, item in batch if isinstance(item, str)]
        if errors:
            raise DataError(errors[0])
        yield [item for _, item in batch]


def workers_of(configured: int) -> int:
    """``data.workers``: -1 means one per available thread (at most 8), 0 decodes in the main process."""
    return configured if configured >= 0 else min(8, torch.get_num_threads() or 1)


def image_source(table: ImageTable, rows: np.ndarray, size: int, workers: int) -> ArraySource | FileSource:
    """The cache when the run has one, else the files."""
    if table.images is not None:
        return ArraySource(table.images, rows)
    return FileSource(table.paths[np.asarray(rows, dtype=np.int64)], size, workers_of(workers))


def crop_batches(table: ImageTable, rows: np.ndarray, squares: np.ndarray, input_size: int, batch_size: int,
                 workers: int) -> Iterator[torch.Tensor]:
    """Normalised float (B, 3, input_size, input_size) crops of ``rows``, ``batch_size`` at a time.

    Generated images are cut from the stored pixels (their full resolution); files are re-opened so
    that a crop keeps the original resolution, whatever the cache size.
    """

    rows = np.asarray(rows, dtype=np.int64)
    squares = np.asarray(squares, dtype=np.int64).reshape(-1, 4)
    if not str(table.paths[rows[0]] if len(rows) else ""):
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            yield eval_crops(torch.from_numpy(np.asarray(table.images[part])),
                             torch.from_numpy(squares[start : start + batch_size]), input_size)
        return
    loader = torch.utils.data.DataLoader(
        CropImages(table.paths[rows], squares, input_size), batch_size=batch_size,
        num_workers=workers_of(workers), collate_fn=list,
    )
    for items in decoded_batches(loader):
        yield torch.stack(items)
