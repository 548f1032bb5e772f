"""A generic manifest: one row per image with its path, label and (optional) boxes and id.

The way to bring any folder of labelled images: write a CSV with a header row, or a JSONL file
with one object per line. Boxes are 0-based half-open pixel ``[x0, y0, x1, y1]`` rows of the image
file as stored (the convention of every entry, see ``entries.py``)::

    path,label,boxes
    cats/001.jpg,cat,"[[12, 8, 40, 33]]"
    dogs/007.jpg,dog,

    {"path": "cats/001.jpg", "label": "cat", "boxes": [[12, 8, 40, 33]], "id": "cat-1"}

For the vision-language test a manifest adds ``caption`` and, optionally, ``objects``: every object class the
image holds (CSV: names separated by ``;``; JSONL: a list of names), its label among them by default.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
import posixpath
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from dejavu.data.entries import (
    Entry, InsideRoot, check_entries, has_control_character, json_kind, no_boxes, not_a_file, shown,
)
from dejavu.errors import DataError

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("boxes", "id", "caption", "objects")
_UTF16_MARKS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _expected_columns() -> str:
    return f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)})"


def _text(path: Path) -> str:
    """The manifest's text: UTF-8, with or without the byte-order mark Excel and Notepad write."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the manifest ({exc.strerror or exc}); expected a readable file") from None
    if raw.startswith(_UTF16_MARKS):
        raise DataError(f"{path}: the manifest is UTF-16 text (it starts with the mark {raw[:2]!r}); expected UTF-8: "
                        "re-save it as UTF-8 (Excel: 'CSV UTF-8')")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: byte {raw[exc.start:exc.start + 1]!r} at offset {exc.start} is not UTF-8 ({exc.reason}); "
            "expected UTF-8 text: re-save the manifest as UTF-8"
        ) from None


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a CSV with a header; boxes stay JSON text, parsed by the caller.

    A row with more cells than the header is refused (most often an unquoted boxes cell, whose commas
    split it); one with fewer lacks its last, optional, columns, which count as empty.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if missing:
            raise DataError(
                f"{path}:1: the header has no column {', '.join(missing)} (found: {_names(header)}); "
                f"expected {_expected_columns()}"
            )
        repeated = sorted({name for name in header if name and header.count(name) > 1})
        if repeated:
            raise DataError(f"{path}:1: the header names column {_names(repeated)} twice; expected each column once")
        required = max(header.index(column) for column in REQUIRED_COLUMNS) + 1
        for cells in reader:
            # line_num is the last physical line read, right even when a quoted cell spans lines.
            line = reader.line_num
            if not cells:
                continue
            if len(cells) > len(header) or len(cells) < required:
                raise DataError(
                    f"{path}:{line}: found {len(cells)} cell{'s' if len(cells) > 1 else ''}; expected {len(header)}, "
                    "one per column of the header "
                    f"({_names(header)}); a cell holding commas, like boxes, must be quoted: \"[[1, 2, 30, 40]]\""
                )
            yield line, dict(zip(header, cells))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc}); expected {_expected_columns()}") from None


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSONL file; blank lines are skipped."""
    # Split on newlines only: str.splitlines would also break at U+2028 and other characters JSON allows in strings.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{line_number}: invalid JSON ({exc.msg}: column {exc.colno}); expected one object per line"
            ) from None
        except RecursionError:
            raise DataError(
                f"{path}:{line_number}: JSON nested too deeply; expected one flat object per line"
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line_number}: found {json_kind(row)}; expected an object per line")
        missing = [key for key in REQUIRED_COLUMNS if key not in row]
        if missing:
            raise DataError(
                f"{path}:{line_number}: no key {', '.join(missing)} (found: {_names(row)}); "
                f"expected {_expected_columns()}"
            )
        yield line_number, row


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_boxes(value: object, where: str) -> np.ndarray:
    """Boxes float64 (m, 4) from a JSON list (JSONL) or its text (CSV); empty or absent = no boxes."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return no_boxes()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise DataError(
                f"{where}: boxes {shown(value)} are not JSON ({reason}); expected [[x0, y0, x1, y1], ...]"
            ) from None
    rows_ok = isinstance(value, list) and all(
        isinstance(row, list) and len(row) == 4 and all(_is_number(number) for number in row) for row in value
    )
    if not rows_ok:
        raise DataError(f"{where}: boxes {shown(value)}; expected a list of [x0, y0, x1, y1] pixel rows")
    # float() of a huge JSON integer overflows; NaN and infinity parse as floats: all three are refused here.
    finite = all(_finite(number) for row in value for number in row)
    if not finite:
        raise DataError(f"{where}: boxes {shown(value)}; expected finite pixel coordinates")
    return np.array(value, dtype=np.float64).reshape(-1, 4)


def _finite(number: float | int) -> bool:
    try:
        return math.isfinite(float(number))
    except OverflowError:
        return False


def _names(names) -> str:
    """Column or key names for a message: as written, or quoted when they hold a control character."""
    text = ", ".join(name if not has_control_character(name) else repr(name) for name in names) or "nothing"
    return text if len(text) <= 200 else text[:200] + "..."


def _default_id(relative: str) -> str:
    """The path without its suffix, '/' kept, '.' and '..' folded (``./cats/1.jpg`` -> ``cats/1``)."""
    return posixpath.normpath(str(PurePosixPath(relative.replace("\\", "/")).with_suffix("")))


def _entry(row: dict, where: str, root: Path, inside: InsideRoot) -> Entry:
    """One manifest row as an entry, its types and its image file checked."""
    relative = row.get("path")
    if not isinstance(relative, str) or not relative.strip():
        raise DataError(f"{where}: path is {shown(relative)}; expected an image path relative to {root}")
    relative = relative.strip()
    if has_control_character(relative):
        raise DataError(f"{where}: path {shown(relative)} holds a control character; expected a file path")
    label = row.get("label")
    # JSON class indices are accepted and kept as their decimal text: labels are names.
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str) or not label.strip():
        raise DataError(f"{where}: label is {shown(label)}; expected a non-empty class name")
    identifier = row.get("id")
    if isinstance(identifier, int) and not isinstance(identifier, bool):
        identifier = str(identifier)
    if identifier is not None and not isinstance(identifier, str):
        raise DataError(f"{where}: id is {shown(identifier)}; expected a string or an integer (or no id)")
    if identifier is None or not identifier.strip():
        identifier = _default_id(relative)
    boxes = _parse_boxes(row.get("boxes"), where)
    caption, objects = _caption_and_objects(row, where, label.strip())
    image = root / relative
    inside(image, where, relative)
    problem = not_a_file(image)
    if problem:
        raise DataError(f"{where}: image {image} is {problem}; expected an image file (paths are relative to {root})")
    return Entry(identifier.strip(), image, label.strip(), boxes, where, objects=objects, caption=caption)


def _caption_and_objects(row: dict, where: str, label: str) -> tuple[str, tuple[str, ...]]:
    """The row's caption ("" when none) and object classes (with its label; empty without a caption)."""
    caption = row.get("caption")
    if caption is not None and not isinstance(caption, str):
        raise DataError(f"{where}: caption is {shown(caption)}; expected a text (or an empty cell for none)")
    caption = " ".join((caption or "").split())
    objects = row.get("objects")
    if isinstance(objects, str):
        objects = [name for name in objects.split(";")]
    if objects is not None and not (isinstance(objects, list) and all(isinstance(name, str) for name in objects)):
        raise DataError(f"{where}: objects {shown(objects)}; expected class names (CSV: a;b;c, JSONL: a list)")
    names = {name.strip() for name in objects or [] if name.strip()}
    if names and not caption:
        raise DataError(f"{where}: objects {shown(row.get('objects'))} but no caption; expected a caption with them")
    return caption, tuple(sorted(names | {label})) if caption else ()


def read_manifest(path: Path, root: Path | None = None, allow_outside_root: bool = False) -> list[Entry]:
    """List the images of a CSV (header row) or JSONL manifest, sorted by id.

    Columns / keys: ``path`` (relative to ``root``, default the manifest's folder), ``label``,
    optional ``boxes`` (float64 (m, 4) 0-based half-open pixel xyxy; CSV: a JSON list in the cell,
    an empty cell meaning no boxes), optional ``id`` (default: the path without its suffix), and for the
    vision-language test optional ``caption`` and ``objects`` (images without a caption are skipped with one
    warning when others have one).
    The file is UTF-8, with or without a byte-order mark. A path that resolves outside ``root``
    (absolute, ``../``, a symlink leading out) is refused unless ``allow_outside_root``.
    Raises :class:`DataError` naming the file and line for a suffix other than .csv / .jsonl, an
    unreadable or non-UTF-8 file, a missing column, a row of the wrong number of cells, an empty
    label, a path outside the root or that is not a file, unparsable or non-finite boxes, invalid
    JSON, a value of the wrong type, and the checks of :func:`check_entries`.

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
    problem = not_a_file(path)
    if problem:
        raise DataError(f"{what}: the manifest file is {problem}; expected a {suffix} file")
    text = _text(path)
    rows = _csv_rows(path, text) if suffix == ".csv" else _jsonl_rows(path, text)
    inside = InsideRoot(root, allow_outside_root)
    entries = [_entry(row, f"{path}:{line_number}", root, inside) for line_number, row in rows]
    uncaptioned = [entry for entry in entries if not entry.caption]
    if len(uncaptioned) < len(entries) and uncaptioned:
        # Only image-caption pairs can be trained on or attacked in the vision-language test.
        warnings.warn(f"{what}: skipped {len(uncaptioned)} images without a caption (others have one)", stacklevel=2)
        entries = [entry for entry in entries if entry.caption]
    return check_entries(entries, what)
