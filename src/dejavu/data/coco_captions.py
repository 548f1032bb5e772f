"""COCO's captions JSON (``captions_train2017.json`` style): one caption per image for the vision-language test.

The file holds ``images`` and ``annotations`` (``{"image_id", "id", "caption"}``, about five per image); an
image's caption is its first annotation in the file's order, as the follow-up trains on one caption per image.
"""

from __future__ import annotations

import json
from pathlib import Path

from dejavu.data.entries import json_kind, not_a_file, shown
from dejavu.errors import DataError


def _load(path: Path) -> list:
    problem = not_a_file(path)
    if problem:
        raise DataError(f"{path}: the COCO captions file is {problem}; expected a captions JSON "
                        "(data.captions, e.g. annotations/captions_train2017.json)")
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({' '.join(str(exc).split())}); expected a COCO captions JSON") from None
    except (OSError, RecursionError) as exc:
        raise DataError(f"{path}: cannot read the COCO captions file ({exc}); expected a COCO captions JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        found = json_kind(data) if not isinstance(data, dict) else f"an object whose 'annotations' is {json_kind(data.get('annotations'))}"
        raise DataError(f"{path}: the top level is {found}; expected an object with an 'annotations' list of "
                        "{\"image_id\", \"caption\"}")
    return data["annotations"]


def read_coco_captions(path: Path, image_ids: set) -> dict:
    """Image id -> its first caption, for the images of the instances JSON (``image_ids``).

    Raises :class:`DataError` naming the file and the annotation for: a missing, unreadable or invalid JSON
    file; a top level without an ``annotations`` list; an annotation that is not an object, lacks its image
    id or names an image the instances JSON does not have; a caption that is missing, not text or empty.

    Example:
        >>> read_coco_captions(Path("annotations/captions_train2017.json"), {9, 25})  # doctest: +SKIP
        {9: 'Closeup of bins of food that include broccoli and bread.', 25: ...}
    """
    captions: dict = {}
    for index, item in enumerate(_load(path)):
        where = f"{path}: annotations[{index}]"
        if not isinstance(item, dict):
            raise DataError(f"{where} is {json_kind(item)}; expected an object with 'image_id' and 'caption'")
        if "image_id" not in item:
            raise DataError(f"{where} has no 'image_id'; expected the id of an image of the instances JSON")
        image_id = item["image_id"]
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or image_id not in image_ids:
            raise DataError(f"{where} has image_id {shown(image_id)}, which is not an image of the instances JSON "
                            "(data.annotations); expected captions of the same images")
        caption = item.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            found = "no 'caption'" if "caption" not in item else f"caption {shown(caption)}"
            raise DataError(f"{where} (image_id {shown(image_id)}) has {found}; expected a non-empty text")
        captions.setdefault(image_id, " ".join(caption.split()))
    return captions
