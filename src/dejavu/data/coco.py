"""COCO instances JSON (``instances_train2017.json`` style) as a labelled dataset.

COCO boxes are ``[x, y, width, height]`` in continuous 0-based pixel coordinates; entries carry
``(x, y, x + width, y + height)``. An image holds many objects, so its one label is chosen by a
policy among its ordinary annotations. Crowd annotations (``iscrowd: 1``, a region of many small
objects) never give the label but are still foreground: the periphery crop must avoid them too.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from numbers import Real
from pathlib import Path

import numpy as np

from dejavu.data.entries import (
    Entry, InsideRoot, check_entries, check_label_policy, has_control_character, json_kind, not_a_file,
    pick_object, shown,
)
from dejavu.data.coco_captions import read_coco_captions
from dejavu.errors import DataError

_TOP_LEVEL_KEYS = ("images", "annotations", "categories")


def _load(path: Path) -> dict:
    problem = not_a_file(path)
    if problem == "missing":
        raise DataError(f"{path}: the COCO annotation file does not exist; expected an instances JSON")
    if problem:
        raise DataError(f"{path}: the COCO annotation file is {problem}; expected an instances JSON file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the COCO annotation file ({exc.strerror or exc})") from None
    if not raw.strip():
        raise DataError(f"{path}: the COCO annotation file is empty; expected an instances JSON")
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is not an error.
        data = json.loads(raw.decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); expected a COCO instances JSON") from None
    except RecursionError:
        raise DataError(f"{path}: not a COCO instances JSON (its values are nested too deeply)") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: the top level is {json_kind(data)}; expected an object with {', '.join(_TOP_LEVEL_KEYS)}"
        )
    for key in _TOP_LEVEL_KEYS:
        if not isinstance(data.get(key), list):
            found = "missing" if key not in data else json_kind(data[key])
            raise DataError(
                f"{path}: top-level key {key!r} is {found}; expected a list (found keys: "
                f"{shown(list(data))})"
            )
    return data


def _name(path: Path, item: object, key: str, kind: str, index: int) -> str:
    """A name field (``file_name``, a category's ``name``): non-empty text; integers are taken as their digits."""
    value = _field(path, item, key, kind, index)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or has_control_character(value):
        raise DataError(f"{path}: {kind}[{index}] has {key} {shown(value)}; expected non-empty printable text")
    return value


def _field(path: Path, item: object, key: str, kind: str, index: int) -> object:
    """``item[key]`` of the ``index``-th element of top-level list ``kind``, or a DataError."""
    if not isinstance(item, dict):
        raise DataError(f"{path}: {kind}[{index}] is {json_kind(item)}; expected an object with {key!r}")
    if key not in item:
        raise DataError(f"{path}: {kind}[{index}] has no {key!r}; expected an object with {key!r}")
    return item[key]


def _identifier(path: Path, item: object, key: str, kind: str, index: int) -> int | str:
    """An id field (``id``, ``image_id``, ``category_id``): an integer or a string, as COCO writes them."""
    value = _field(path, item, key, kind, index)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{path}: {kind}[{index}] has {key} {shown(value)}; expected an integer or a string")
    return value


def _bbox(path: Path, annotation: dict, index: int) -> np.ndarray:
    """xyxy float64 (4,) of one annotation's ``[x, y, w, h]`` (booleans are not numbers here)."""
    bbox = _field(path, annotation, "bbox", "annotations", index)
    name = f"annotation id {shown(annotation.get('id', f'#{index}'))}"
    if (not isinstance(bbox, list) or len(bbox) != 4
            or not all(isinstance(value, Real) and not isinstance(value, bool) for value in bbox)):
        raise DataError(f"{path}: {name} has bbox {shown(bbox)}; expected 4 numbers [x, y, width, height]")
    try:
        x, y, width, height = (float(value) for value in bbox)
    except OverflowError:  # an integer too large for a float
        x = y = width = height = math.inf
    if not all(math.isfinite(value) for value in (x, y, width, height)) or width <= 0 or height <= 0:
        raise DataError(
            f"{path}: {name} has bbox {shown(bbox)}; expected finite [x, y, width, height] with width > 0 and "
            "height > 0"
        )
    return np.array([x, y, x + width, y + height], dtype=np.float64)


def _crowd(path: Path, annotation: dict, index: int) -> bool:
    """``iscrowd``: 0 or 1 (absent: 0; JSON true and false too). Anything else would silently decide which
    objects may give the label."""
    value = annotation.get("iscrowd", 0)
    if value not in (0, 1):
        raise DataError(
            f"{path}: annotation id {shown(annotation.get('id', f'#{index}'))} has iscrowd {shown(value)}; "
            "expected 0 or 1"
        )
    return bool(value)


def _categories(path: Path, data: dict, classes: list[str] | None) -> dict[int | str, str]:
    """Category id -> name; refuses ``classes`` that name no category."""
    category_names = {}
    for index, category in enumerate(data["categories"]):
        category_id = _identifier(path, category, "id", "categories", index)
        if category_id in category_names:
            raise DataError(f"{path}: categories[{index}] repeats category id {category_id!r}; expected unique ids")
        category_names[category_id] = _name(path, category, "name", "categories", index)
    if classes is not None:
        unknown = sorted(set(classes) - set(category_names.values()))
        if unknown:
            raise DataError(
                f"{path}: classes {', '.join(unknown)} are not category names; "
                f"expected some of {', '.join(sorted(set(category_names.values())))}"
            )
    return category_names


def _file_names(path: Path, data: dict) -> dict[int | str, str]:
    """Image id -> file name, in the JSON's order (ids must be unique)."""
    file_names = {}
    for index, image in enumerate(data["images"]):
        image_id = _identifier(path, image, "id", "images", index)
        if image_id in file_names:
            raise DataError(f"{path}: images[{index}] repeats image id {image_id!r}; expected unique ids")
        file_names[image_id] = _name(path, image, "file_name", "images", index)
    return file_names


def _objects(
    path: Path, data: dict, file_names: dict, category_names: dict
) -> dict[int | str, list[tuple[np.ndarray, str, bool]]]:
    """Per image id, in JSON order: (xyxy box (4,), category name, crowd flag) of each annotation."""
    objects: dict[int | str, list[tuple[np.ndarray, str, bool]]] = {}
    for index, annotation in enumerate(data["annotations"]):
        image_id = _identifier(path, annotation, "image_id", "annotations", index)
        category_id = _identifier(path, annotation, "category_id", "annotations", index)
        name = f"annotation id {shown(annotation.get('id', f'#{index}'))}"
        if image_id not in file_names:
            raise DataError(f"{path}: {name} has image_id {image_id!r}, which is not among 'images'")
        if category_id not in category_names:
            raise DataError(
                f"{path}: {name} has category_id {category_id!r}, which is not among 'categories'"
            )
        crowd = _crowd(path, annotation, index)
        box = _bbox(path, annotation, index)
        objects.setdefault(image_id, []).append((box, category_names[category_id], crowd))
    return objects


def read_coco(root: Path, annotations: Path, label_policy: str = "largest",
              classes: list[str] | None = None, allow_outside_root: bool = False,
              captions: Path | None = None) -> list[Entry]:
    """List a COCO instances JSON as entries, sorted by id.

    Image files: ``<root>/<file_name>``; id = file_name stem; boxes: every annotation of the image
    (crowd ones included), xyxy in the JSON's order. label: the category of the non-crowd annotation
    with the largest box area ("largest": box, not mask, area, as for VOC and since ``area`` is
    optional in hand-written files) or of the first one ("first"); an image with only crowd
    annotations takes its label from those. Images without annotations have no label: they are
    skipped with one warning giving the count. ``classes`` keeps images whose label is in it. A
    file_name that resolves outside ``root`` (absolute, ``../``, a symlink leading out) is refused
    unless ``allow_outside_root``. With ``captions`` (a COCO captions JSON) each entry carries its first
    caption and the categories of all its annotations as its objects; images without a caption are skipped
    with one warning (they cannot be training pairs).

    Raises :class:`DataError` naming the JSON for: unreadable, empty or invalid JSON, a missing top-level
    key, a field of the wrong type, a repeated image or category id, an annotation whose image_id is not
    an image, an unknown category_id, a bbox that is not 4 finite numbers with a positive width and
    height, an iscrowd other than 0 or 1, a file_name outside the root or that is not a file, an
    unknown class in ``classes``, an unknown ``label_policy``.

    Example:
        >>> json_path = Path("coco/annotations/instances_train2017.json")
        >>> entries = read_coco(Path("coco/train2017"), json_path)  # doctest: +SKIP
        >>> entries[0].id, entries[0].label
        ('000000000009', 'bowl')
    """
    root = Path(os.path.abspath(root))
    annotations = Path(os.path.abspath(annotations))
    what = f"coco annotations '{annotations}'"
    check_label_policy(label_policy, what)
    data = _load(annotations)

    category_names = _categories(annotations, data, classes)
    file_names = _file_names(annotations, data)
    objects = _objects(annotations, data, file_names, category_names)
    texts = read_coco_captions(Path(os.path.abspath(captions)), set(file_names)) if captions is not None else None

    wanted = None if classes is None else set(classes)
    inside = InsideRoot(root, allow_outside_root)
    entries, uncaptioned = [], 0
    for image_id, file_name in file_names.items():
        found = objects.get(image_id)
        if not found:
            continue
        boxes = np.stack([box for box, _, _ in found])
        # The label comes from ordinary objects; only an image of crowds alone takes it from a crowd.
        ordinary = [position for position, (_, _, crowd) in enumerate(found) if not crowd]
        candidates = ordinary or list(range(len(found)))
        chosen = candidates[pick_object(boxes[candidates], label_policy)]
        label = found[chosen][1]
        if wanted is not None and label not in wanted:
            continue
        if texts is not None and image_id not in texts:
            uncaptioned += 1
            continue
        path = root / file_name
        where = f"{annotations}: image id {image_id!r}"
        inside(path, where, file_name)
        problem = not_a_file(path)
        if problem:
            raise DataError(f"{where} has file_name {file_name!r}, but {path} is not a file ({problem}); expected an "
                            "image file")
        extra = {} if texts is None else {"objects": tuple(sorted({name for _, name, _ in found})), "caption": texts[image_id]}
        entries.append(Entry(Path(file_name).stem, path, label, boxes, f"{annotations} (image id {image_id!r})", **extra))
    unlabelled = len(file_names) - len(objects)
    if unlabelled:
        warnings.warn(f"{what}: skipped {unlabelled} images without annotations (no label)", stacklevel=2)
    if uncaptioned:
        warnings.warn(f"{what}: skipped {uncaptioned} images without a caption in '{captions}'", stacklevel=2)
    return check_entries(entries, what)
