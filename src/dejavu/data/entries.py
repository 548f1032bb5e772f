"""The record every folder reader returns (:class:`Entry`) and the checks all readers share.

Readers (``imagenet.py``, ``coco.py``, ``manifest.py``) only *list* a dataset: an entry names an
image file, its class and its foreground boxes, and where those came from, so that a later error
("this box is degenerate", "this file is listed twice") can point at the line of the annotation
that caused it. Pixels are read later, by the stage that needs them.

Boxes are float64 ``(m, 4)`` rows ``(x0, y0, x1, y1)``: 0-based, half-open pixel coordinates of the
image file as stored (the object covers columns ``x0 .. x1 - 1``), the convention of ``crops.py``.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dejavu.errors import DataError

# Suffixes (compared in lower case) of the files a folder reader takes for images.
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")

# Newlines, tabs, NUL...: never part of a real id, label or file name, and they would break a message
# (one line) or a CSV artifact apart.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# How an image with several annotated objects gets its one label.
LABEL_POLICIES = ("largest", "first")


@dataclass(frozen=True)
class Entry:
    """One image of a dataset on disk, before its pixels are read.

    id: unique within the dataset; path: absolute path of the image file; label: class name;
    boxes: float64 (m, 4) foreground boxes, 0-based half-open pixel xyxy (m may be 0: unboxed);
    annotation: where label and boxes came from, for messages ("a.xml", "manifest.csv:17"), or "".
    objects: every object class the image holds (captioned data, the vision-language test), else empty;
    caption: the image's caption, or "".

    Example:
        >>> entry = Entry("cat_1", Path("/data/cat/cat_1.jpg"), "cat", np.array([[2.0, 3.0, 40.0, 30.0]]), "cat_1.xml")
        >>> entry.boxes.shape
        (1, 4)
    """

    id: str
    path: Path
    label: str
    boxes: np.ndarray
    annotation: str
    objects: tuple[str, ...] = ()
    caption: str = ""


def no_boxes() -> np.ndarray:
    """The boxes of an unboxed image: float64 (0, 4)."""
    return np.zeros((0, 4), dtype=np.float64)


def is_image_file(name: str) -> bool:
    """Whether a file name has one of :data:`IMAGE_SUFFIXES` (any case: ImageNet uses ``.JPEG``)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def check_label_policy(label_policy: str, what: str) -> None:
    """Raise :class:`DataError` unless ``label_policy`` is one of :data:`LABEL_POLICIES`."""
    if label_policy not in LABEL_POLICIES:
        raise DataError(
            f"{what}: unknown label_policy {label_policy!r}; expected one of {', '.join(LABEL_POLICIES)}"
        )


def pick_object(boxes: np.ndarray, label_policy: str) -> int:
    """Index of the object whose class becomes the image's label.

    boxes: (m, 4) xyxy with m >= 1. "largest": the largest box area (the first of equal ones);
    "first": object 0, the annotation's own order.

    Example:
        >>> pick_object(np.array([[0, 0, 2, 2], [0, 0, 5, 5]], dtype=float), "largest")
        1
    """
    if label_policy == "first":
        return 0
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(np.argmax(areas))


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a control character (newline, tab, NUL, ...)."""
    return _CONTROL.search(text) is not None


def shown(value: object, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages: it stays one readable line whatever an
    annotation file holds (repr escapes newlines; a megabyte cell is cut)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def json_kind(value: object) -> str:
    """What a parsed JSON value is, in JSON's words ("an array", "null"), for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    kinds = ((dict, "an object"), (list, "an array"), (str, "a string"), ((int, float), "a number"))
    return next((kind for types, kind in kinds if isinstance(value, types)), type(value).__name__)


def not_a_file(path: Path) -> str | None:
    """None when ``path`` is a regular file (or a symlink to one), else what it is instead, in words:
    "missing", "a folder", or why it cannot be looked at (a name too long, a loop of symlinks)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    except ValueError:  # an embedded NUL byte
        return "not a valid path"
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else "not a regular file"


def require_folder(path: Path, what: str, expected: str) -> None:
    """Raise :class:`DataError` naming ``path`` unless it is an existing folder."""
    if not path.exists():
        raise DataError(f"{what}: folder {path} does not exist; expected {expected}")
    if not path.is_dir():
        raise DataError(f"{what}: {path} is not a folder; expected {expected}")


def _source(entry: Entry) -> str:
    """The image file and, when known, the annotation that listed it."""
    return f"{entry.path} ({entry.annotation})" if entry.annotation else str(entry.path)


class _RealPaths:
    """``os.path.realpath`` with the folders resolved once each.

    A full realpath costs a system call per path component; at ImageNet scale (1.3 M files in
    1000 folders) resolving each folder once and only ``lstat``-ing the file is ~20x faster.
    """

    def __init__(self) -> None:
        self.folders: dict[str, str] = {}

    def __call__(self, path: Path) -> str:
        folder, name = os.path.split(os.fspath(path))
        if name in ("", ".", ".."):
            return os.path.realpath(path)
        real_folder = self.folders.get(folder)
        if real_folder is None:
            real_folder = self.folders[folder] = os.path.realpath(folder)
        joined = os.path.join(real_folder, name)
        # The file itself may be a symlink (to another image of the dataset): follow it fully.
        return os.path.realpath(joined) if os.path.islink(joined) else joined


class InsideRoot:
    """Refuses image paths of an annotation file that resolve outside the dataset's root folder.

    A manifest or a COCO JSON names files by text; without this check an absolute path, ``../`` or a
    symlink leading out of the root pulls any image of the machine into the dataset (and its pixels into
    the public set and the report). ``allow`` (``data.allow_outside_root``) turns the check off.

    Example:
        >>> inside = InsideRoot(Path("/data/pets"), allow=False)
        >>> inside(Path("/data/pets/cats/1.jpg"), "manifest.csv:2", "cats/1.jpg")  # inside: returns None
    """

    def __init__(self, root: Path, allow: bool):
        self.root = os.path.realpath(root)
        self.allow = allow
        self.real_path = _RealPaths()

    def __call__(self, path: Path, where: str, given: str) -> None:
        if self.allow:
            return
        real = self.real_path(path)
        if os.path.commonpath([real, self.root]) != self.root:
            raise DataError(
                f"{where}: image path {given!r} resolves to {real}, outside the dataset root {self.root}; expected "
                "a path inside the root: move (not symlink) the file under it, or set data.allow_outside_root=true "
                "to read files from anywhere"
            )


def _check_boxes(entry: Entry, what: str) -> None:
    source = entry.annotation or str(entry.path)
    boxes = np.asarray(entry.boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(
            f"{what}: {source}: expected boxes of shape (m, 4) as x0, y0, x1, y1, got shape {boxes.shape}"
        )
    if boxes.dtype.kind not in "iuf" or not np.isfinite(boxes).all():
        raise DataError(f"{what}: {source}: expected finite numeric boxes, got {boxes.tolist()}")
    degenerate = np.flatnonzero((boxes[:, 0] >= boxes[:, 2]) | (boxes[:, 1] >= boxes[:, 3]))
    if len(degenerate):
        index = int(degenerate[0])
        x0, y0, x1, y1 = (float(value) for value in boxes[index])
        raise DataError(
            f"{what}: {source}: object {index} (counting from 0) has a degenerate box "
            f"x0={x0:g}, y0={y0:g}, x1={x1:g}, y1={y1:g}; expected x0 < x1 and y0 < y1"
        )


def check_entries(entries: list[Entry], what: str) -> list[Entry]:
    """Validate a dataset listing and return it sorted by id.

    Raises :class:`DataError` (messages start with ``what``, e.g. "imagenet root '/data/train'") for:
    no entries; an empty or duplicate id (naming both sources); one image file reachable under two
    ids (``os.path.realpath`` equal, so symlinks and ``..`` count); boxes that are not a finite
    (m, 4) array; a degenerate box (x0 >= x1 or y0 >= y1), naming the annotation, the object index
    and the four values; an id or label holding a control character (newline, tab, NUL).

    Example:
        >>> one = Entry("a", Path("/d/a.jpg"), "cat", no_boxes(), "")
        >>> [entry.id for entry in check_entries([one], "example")]
        ['a']
    """
    if not entries:
        raise DataError(f"{what}: found no images; expected at least one labelled image")
    by_id: dict[str, Entry] = {}
    by_file: dict[str, Entry] = {}
    real_path = _RealPaths()
    for entry in entries:
        if not entry.id:
            raise DataError(f"{what}: {_source(entry)} has an empty id; expected a non-empty string")
        for field, value in (("id", entry.id), ("label", entry.label)):
            if has_control_character(value):
                # The source is quoted too: a file name on disk may hold the same character.
                raise DataError(
                    f"{what}: {shown(_source(entry), 400)} has the {field} {value!r}, which holds a control "
                    "character; expected printable text (no newline, tab or NUL)"
                )
        if entry.id in by_id:
            raise DataError(
                f"{what}: id {entry.id!r} appears twice: {_source(by_id[entry.id])} and {_source(entry)}; "
                "expected unique ids"
            )
        by_id[entry.id] = entry
        real = real_path(entry.path)
        if real in by_file:
            first = by_file[real]
            raise DataError(
                f"{what}: the file {real} is listed under two ids, {first.id!r} ({_source(first)}) and "
                f"{entry.id!r} ({_source(entry)}); expected each image once (a duplicate would sit in two "
                "splits at once)"
            )
        by_file[real] = entry
        _check_boxes(entry, what)
    return sorted(entries, key=lambda entry: entry.id)


def keep_classes(entries: list[Entry], classes: list[str] | None, what: str) -> list[Entry]:
    """The entries of ``classes`` (all when None); a class that labels no image is an error naming it."""
    if classes is None:
        return entries
    found = {entry.label for entry in entries}
    missing = sorted(set(classes) - found)
    if missing:
        raise DataError(
            f"{what}: data.classes {', '.join(map(repr, missing))} label no image; "
            f"expected some of {', '.join(sorted(found)[:20])}{', ...' if len(found) > 20 else ''}"
        )
    wanted = set(classes)
    return [entry for entry in entries if entry.label in wanted]
