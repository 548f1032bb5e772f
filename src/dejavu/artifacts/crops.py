"""``data/crops.csv`` read back with typed columns, one row per split id, squares inside their images."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from dejavu.artifacts.catalog import load_table
from dejavu.artifacts.files import CROP_SETS, check_unique, count, examples, redo, refuse
from dejavu.artifacts.split import load_split
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.errors import RunFolderError
from dejavu.runs import Run

CROP_COLUMNS = ("id", "set", "label", "width", "height", "n_boxes", "kept", "reason", "short_side",
                "rect_x0", "rect_y0", "rect_x1", "rect_y1", "square_x0", "square_y0", "square_x1", "square_y1",
                "overlaps_box")
TEXT_COLUMNS = ("id", "set", "reason")


# Crops -------------------------------------------------------------------------------------------
def load_crops(run: Run, table: ImageTable | None = None) -> dict[str, np.ndarray]:
    """``data/crops.csv`` as columns (ids as str, numbers as int), checked against the split and the catalog:
    exactly :data:`CROP_COLUMNS`, integer numbers, ``set`` in A/B/T, ``kept`` 0/1, one row per image of
    each set, labels and sizes as in the catalog, kept squares non-empty and inside their image."""
    path, advice = run.data_dir / "crops.csv", redo(run.root, "crops")
    if not path.is_file():
        raise RunFolderError(f"artifact '{path}' is missing: {advice}")
    table = table if table is not None else load_table(run, with_images=False)
    sets = load_split(run, table)
    lines, columns = _crop_columns(path, advice)
    _check_crop_rows(path, lines, columns, table, sets, advice)
    return columns


def _crop_columns(path: Path, advice: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The line number of each row and the columns (numbers parsed) of ``crops.csv``."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows, lines = [], []
            for row in reader:
                if row:
                    rows.append(row)
                    lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise refuse(path, f"is not a readable CSV file ({type(exc).__name__})", "the table the crops stage writes",
                     advice) from None
    if header is None or sorted(header) != sorted(CROP_COLUMNS):
        header = header or []
        odd = [c for c in header if c not in CROP_COLUMNS or header.count(c) > 1]
        found = f"lacks the column {next(c for c in CROP_COLUMNS if c not in header)!r}" if not odd else \
            f"has the unexpected or repeated column {odd[0]!r}"
        raise refuse(path, found, f"exactly the columns {', '.join(CROP_COLUMNS)}", advice)
    for line, row in zip(lines, rows):
        if len(row) != len(header):
            raise refuse(path, f"has {len(row)} cells on line {line}", f"{len(header)} cells, one per column", advice)
    columns: dict[str, np.ndarray] = {}
    for position, name in enumerate(header):
        values = [row[position] for row in rows]
        columns[name] = np.array(values, dtype=str) if name in TEXT_COLUMNS else _integers(path, name, values, lines,
                                                                                        advice)
    return np.array(lines, dtype=np.int64), {name: columns[name] for name in CROP_COLUMNS}


def _integers(path: Path, name: str, values: list[str], lines: list[int], advice: str) -> np.ndarray:
    try:
        return np.array(values, dtype=np.int64)
    except (ValueError, OverflowError):
        for line, value in zip(lines, values):
            try:
                np.array(value, dtype=np.int64)
            except (ValueError, OverflowError):
                raise refuse(path, f"holds {value!r} on line {line}, column {name!r}", "an integer", advice) from None
        raise


def _check_crop_rows(path: Path, lines: np.ndarray, crops: dict[str, np.ndarray], table: ImageTable,
                     sets: dict[str, np.ndarray], advice: str) -> None:
    def first(bad: np.ndarray, what: str, shown: Sequence[str], expected: str, note: str = "") -> None:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            cells = ", ".join(f"{name} {str(crops[name][row])!r}" if name in TEXT_COLUMNS else
                              f"{name} {crops[name][row]}" for name in shown)
            raise refuse(path, f"has on line {lines[row]} (id {str(crops['id'][row])!r}) {what} ({cells}{note})",
                         expected, advice)

    first(~np.isin(crops["set"], CROP_SETS), "a set other than A, B or T", ("set",), "set A, B or T")
    for flag in ("kept", "overlaps_box"):
        first(~np.isin(crops[flag], (0, 1)), f"'{flag}' other than 0 or 1", (flag,), f"'{flag}' 0 or 1")
    for name in CROP_SETS:
        ids = crops["id"][crops["set"] == name]
        check_unique(path, ids, f"ids of set {name}", advice)
        for found, wanted in ((ids, sets[name]), (sets[name], ids)):
            odd = found[~np.isin(found, wanted)]
            if len(odd):
                what = count(len(odd), f"rows of set {name} for ids not in split.json's set {name}") \
                    if found is ids else f"no row for {count(len(odd), 'ids')} of split.json's set {name}"
                raise refuse(path, f"has {what} (e.g. {examples(odd)})",
                             f"one row per image of set {name} of split.json", advice)
        if name != "T" and not (crops["kept"][crops["set"] == name] == 1).any():
            raise refuse(path, f"keeps no crop of set {name}", f"at least one kept crop of set {name}", advice)
    positions = index_of_ids(table.ids, crops["id"], "crops.csv")
    labels, sizes = table.labels[positions], table.sizes[positions]
    wrong = crops["label"] != labels
    first(wrong, "a label other than the catalog's", ("label",), "the catalog's label",
          f"; the catalog's: {labels[wrong][0]}" if wrong.any() else "")
    wrong = (crops["width"] != sizes[:, 0]) | (crops["height"] != sizes[:, 1])
    first(wrong, "an image size other than the catalog's", ("width", "height"), "the catalog's width and height",
          f"; the catalog's: {sizes[wrong][0].tolist()}" if wrong.any() else "")
    corners = ("square_x0", "square_y0", "square_x1", "square_y1")
    x0, y0, x1, y1 = (crops[name] for name in corners)
    inside = (0 <= x0) & (x0 < x1) & (x1 <= crops["width"]) & (0 <= y0) & (y0 < y1) & (y1 <= crops["height"])
    first((crops["kept"] == 1) & ~inside, "a kept crop square that is empty or leaves its image",
          ("width", "height", *corners), "0 <= square_x0 < square_x1 <= width and 0 <= square_y0 < square_y1 <= height")


def kept_crops(run: Run, set_name: str, table: ImageTable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ids (sorted) and int (N, 4) crop squares of the kept crops of one set."""
    crops = load_crops(run, table)
    keep = (crops["set"] == set_name) & (crops["kept"] == 1)
    ids = crops["id"][keep]
    squares = np.stack([crops[f"square_{k}"][keep] for k in ("x0", "y0", "x1", "y1")], axis=1)
    order = np.argsort(ids, kind="stable")
    return ids[order], squares[order].reshape(-1, 4)
