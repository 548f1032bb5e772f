"""Readers of a run folder's artifacts: the catalog, the split, the crops table.

The stages that write these files and the report that shows them both read them through here, so
neither imports the other (see the layers in ``pyproject.toml``'s import contract).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dejavu.data.catalog import load_catalog
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.data.splits import SET_NAMES
from dejavu.errors import DataError, RunFolderError
from dejavu.runs import Run, read_json, write_text

MODELS = ("A", "B")
# Query sets embedded as crops: the two attacked sets and the held-out control set.
CROP_SETS = ("A", "B", "T")
CROP_COLUMNS = ("id", "set", "label", "width", "height", "n_boxes", "kept", "reason", "short_side",
                "rect_x0", "rect_y0", "rect_x1", "rect_y1", "square_x0", "square_y0", "square_x1", "square_y1",
                "overlaps_box")


def load_table(run: Run, with_images: bool = True) -> ImageTable:
    """The catalog of ``data/`` (with its memory-mapped pixel cache unless ``with_images=False``)."""
    return load_catalog(run.data_dir, with_images)


def load_split(run: Run) -> dict[str, np.ndarray]:
    """The split's id arrays: A, B, X, T and ``shared`` (empty for the balanced scheme)."""
    payload = read_json(run.data_dir / "split.json")
    sets = {name: np.array(payload["sets"][name]) for name in SET_NAMES}
    sets["shared"] = np.array(payload["sets"].get("shared", []), dtype=sets["A"].dtype)
    return sets


def load_canaries(run: Run) -> tuple[np.ndarray, int]:
    """The canary ids (empty when off, or for a split written before canaries existed) and their repeats."""
    payload = read_json(run.data_dir / "split.json")
    return np.array(payload.get("canaries", []), dtype=str), int(payload.get("canary_repeats", 1))


def load_crops(run: Run) -> dict[str, np.ndarray]:
    """``data/crops.csv`` as columns (ids as str, numbers as int)."""
    path = run.data_dir / "crops.csv"
    if not path.is_file():
        raise RunFolderError(f"artifact '{path}' is missing: run the crops stage first")
    with open(path, newline="") as handle:
        records = list(csv.DictReader(handle))
    columns: dict[str, np.ndarray] = {}
    for name in CROP_COLUMNS:
        values = [r[name] for r in records]
        columns[name] = np.array(values) if name in ("id", "set", "reason") else np.array(values, dtype=np.int64)
    return columns


def kept_crops(run: Run, set_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Ids (sorted) and int (N, 4) crop squares of the kept crops of one set."""
    crops = load_crops(run)
    keep = (crops["set"] == set_name) & (crops["kept"] == 1)
    ids = crops["id"][keep]
    squares = np.stack([crops[f"square_{k}"][keep] for k in ("x0", "y0", "x1", "y1")], axis=1)
    order = np.argsort(ids, kind="stable")
    return ids[order], squares[order].reshape(-1, 4)


def own_rows(table: ImageTable, sets: dict[str, np.ndarray], model: str) -> np.ndarray:
    """Table rows of model ``model``'s training set: its set plus the shared set, each image once."""
    return index_of_ids(table.ids, np.concatenate([sets[model], sets["shared"]]), f"split set {model}")


def training_rows(table: ImageTable, sets: dict[str, np.ndarray], model: str, canaries: np.ndarray,
                  repeats: int) -> np.ndarray:
    """Table rows model ``model`` trains on: its set plus the shared set; for model A, each canary's row is
    appended ``repeats - 1`` more times (so an epoch shows it ``repeats`` times). Model B: no canaries."""
    rows = own_rows(table, sets, model)
    if model != "A" or len(canaries) == 0 or repeats <= 1:
        return rows
    extra = index_of_ids(table.ids, np.asarray(canaries), "canaries")
    if not np.isin(extra, rows).all():
        raise DataError("split.json lists canaries that are not in set A; re-run the split stage")
    return np.concatenate([rows, np.tile(extra, repeats - 1)])


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A CSV artifact, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
