"""A generic manifest: one row per image with its path, label and (optional) boxes and id.

The way to bring any folder of labelled images: write a CSV with a header row, or a JSONL file
with one object per line. Boxes are 0-based half-open pixel ``[x0, y0, x1, y1]`` rows of the image
file as stored (the convention of every entry, see ``entries.py``)::

    path,label,boxes
    cats/001.jpg,cat,"[[12, 8, 40, 33]]"
    dogs/007.jpg,dog,

    {"path": "cats/001.jpg", "label": "cat", "boxes": [[12, 8, 40, 33]], "id": "cat-1"}
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from dejavu.data.entries import Entry, check_entries, no_boxes
from dejavu.errors import DataError

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("boxes", "id")


def _expected_columns() -> str:
    return f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)})"


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a CSV with a header; boxes stay JSON text, parsed by the caller."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        found = reader.fieldnames or []
        missing = [column for column in REQUIRED_COLUMNS if column not in found]
        if missing:
            raise DataError(
                f"{path}:1: the header has no column {', '.join(missing)} (found: {', '.join(found) or 'nothing'}); "
                f"expected {_expected_columns()}"
            )
        for row in reader:
            # line_num is the last physical line read, right even when a quoted cell spans lines.
            yield reader.line_num, row


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSONL file; blank lines are skipped."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{line_number}: invalid JSON ({exc.msg}); expected one object per line"
                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_number}: found a {type(row).__name__}; expected an object per line")
            missing = [key for key in REQUIRED_COLUMNS if key not in row]
            if missing:
                raise DataError(
                    f"{path}:{line_number}: no key {', '.join(missing)} (found: {', '.join(row) or 'nothing'}); "
                    f"expected {_expected_columns()}"
                )
            yield line_number, row


def _parse_boxes(value: object, where: str) -> np.ndarray:
    """Boxes float64 (m, 4) from a JSON list (JSONL) or its text (CSV); empty or absent = no boxes."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return no_boxes()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}: boxes {value!r} are not JSON ({exc.msg}); expected [[x0, y0, x1, y1], ...]"
            ) from None
    rows_ok = isinstance(value, list) and all(
        isinstance(row, list) and len(row) == 4
        and all(isinstance(number, (int, float)) and not isinstance(number, bool) for number in row)
        for row in value
    )
    if not rows_ok:
        raise DataError(f"{where}: boxes {value!r}; expected a list of [x0, y0, x1, y1] pixel rows")
    return np.array(value, dtype=np.float64).reshape(-1, 4)


def _default_id(relative: str) -> str:
    """The path without its suffix, '/' kept, '.' and '..' folded (``./cats/1.jpg`` -> ``cats/1``)."""
    return posixpath.normpath(str(PurePosixPath(relative.replace("\\", "/")).with_suffix("")))


def read_manifest(path: Path, root: Path | None = None) -> list[Entry]:
    """List the images of a CSV (header row) or JSONL manifest, sorted by id.

    Columns / keys: ``path`` (relative to ``root``, default the manifest's folder), ``label``,
    optional ``boxes`` (float64 (m, 4) 0-based half-open pixel xyxy; CSV: a JSON list in the cell,
    an empty cell meaning no boxes) and optional ``id`` (default: the path without its suffix).
    Raises :class:`DataError` naming the file and line for a suffix other than .csv / .jsonl, a
    missing column, an empty label, an image path that is not a file, unparsable boxes, invalid
    JSON, and the checks of :func:`check_entries`.

    Example:
        >>> entries = read_manifest(Path("pets/manifest.csv"))  # doctest: +SKIP
        >>> entries[0].id, entries[0].label, entries[0].boxes.shape
        ('cats/001', 'cat', (1, 4))
    """
    path = Path(os.path.abspath(path))
    root = path.parent if root is None else Path(os.path.abspath(root))
    what = f"manifest '{path}'"
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise DataError(f"{what}: unknown manifest suffix {path.suffix!r}; expected .csv or .jsonl")
    if not path.is_file():
        raise DataError(f"{what}: the manifest file does not exist; expected a {suffix} file")
    rows = _csv_rows(path) if suffix == ".csv" else _jsonl_rows(path)

    entries = []
    for line_number, row in rows:
        where = f"{path}:{line_number}"
        relative = row.get("path")
        if not isinstance(relative, str) or not relative.strip():
            raise DataError(f"{where}: path is {relative!r}; expected an image path relative to {root}")
        label = row.get("label")
        # JSON class indices are accepted and kept as their decimal text: labels are names.
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"{where}: label is {label!r}; expected a non-empty class name")
        image = root / relative.strip()
        if not image.is_file():
            found = "a folder" if image.is_dir() else "missing"
            raise DataError(f"{where}: image {image} is {found}; expected an image file (paths are relative to {root})")
        identifier = row.get("id")
        if identifier is None or (isinstance(identifier, str) and not identifier.strip()):
            identifier = _default_id(relative.strip())
        entries.append(Entry(str(identifier).strip(), image, label.strip(),
                             _parse_boxes(row.get("boxes"), where), where))
    return check_entries(entries, what)
