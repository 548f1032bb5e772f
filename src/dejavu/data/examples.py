"""Tiny example datasets in every on-disk layout the readers accept (ImageNet, VOC, COCO, manifest).

They serve the tests, the README and ``dejavu examples OUT``: a user sees what each layout looks
like and can run the whole pipeline on it in seconds. The pictures are ``scenes`` images (one
object with an exact box), each resized to its own non-square size so that readers and crops
are exercised on real pixel coordinates rather than on one square size.

What each layout holds (C classes, n = boxed_per_class + unboxed_per_class images per class):

- imagenet: ``train/<wnid>/<wnid>_<k>.JPEG`` and ``Annotation/<wnid>/<wnid>_<k>.xml``; the first
  ``unboxed_per_class`` images of each class have no XML. wnids are fake: ``n00000001`` ...
- voc: ``JPEGImages/ex_<i>.jpg`` and ``Annotations/ex_<i>.xml``. A VOC label comes from the XML,
  so *every* image is boxed here and ``unboxed_per_class`` only counts images. Every 4th image of
  a class also carries a small pasted object of the next class, written first, so the label
  policies "first" and "largest" disagree on it.
- coco: ``images/ex_<i>.jpg`` and ``annotations/instances.json``; boxed and pasted as VOC, and
  every 8th image (from the 3rd) also has a crowd annotation (``iscrowd: 1``), listed first.
- manifest: ``images/<class>/<k>.jpg`` and ``manifest.csv`` (path, label, boxes); the first
  ``unboxed_per_class`` images of each class have an empty boxes cell.
"""

from __future__ import annotations

import csv
import json
import math
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from dejavu.data.scenes import ScenesDataset
from dejavu.errors import DataError

LAYOUTS = ("imagenet", "voc", "coco", "manifest")

_SIZE_RANGE = (48, 96)  # width and height of a written image, inclusive
_RENDER_SIZE = 64
_JPEG_QUALITY = 95
_PASTE_EVERY = 4  # VOC/COCO: images k = 0, 4, 8, ... of a class get a small second object
_CROWD_EVERY, _CROWD_OFFSET = 8, 2  # COCO: images k = 2, 10, 18, ... of a class get a crowd box
# The odd images are scenes of their own seed, so they are new pictures, not re-encodings of regular ones.
_ODD_SEED_OFFSET = 1_000_003
_ODD_KINDS = ("gray", "cmyk", "rgba")


@dataclass(frozen=True)
class _Picture:
    """One image before it is written: uint8 (H, W, 3) pixels, its object's box, class and index k in the class."""

    pixels: np.ndarray
    box: tuple[int, int, int, int]
    label: int
    k: int


@dataclass(frozen=True)
class _Object:
    """One annotated object of a written image: int 0-based half-open xyxy, class index, crowd flag."""

    box: tuple[int, int, int, int]
    label: int
    crowd: bool = False


def _resize(record_image: np.ndarray, record_box: np.ndarray, width: int, height: int) -> tuple[np.ndarray, tuple]:
    """Resize to (height, width) and scale the box so that it still covers every object pixel.

    PIL's BOX filter makes output pixel j average the source span [j / s, (j + 1) / s) (s = scale;
    when enlarging it picks the nearest source pixel), so exactly the outputs floor(x0 * s) ..
    ceil(x1 * s) - 1 touch object pixels: flooring the start and ceiling the end is tight and safe.
    """
    resized = Image.fromarray(record_image).resize((width, height), Image.Resampling.BOX)
    scale_x, scale_y = width / _RENDER_SIZE, height / _RENDER_SIZE
    x0, y0, x1, y1 = (float(value) for value in record_box)
    box = (math.floor(x0 * scale_x), math.floor(y0 * scale_y), math.ceil(x1 * scale_x), math.ceil(y1 * scale_y))
    return np.asarray(resized), box


@lru_cache(maxsize=4)
def _pictures(n_classes: int, per_class: int, seed: int) -> tuple[_Picture, ...]:
    """The resized scenes of one example dataset (cached: write_examples writes them four times)."""
    scenes = ScenesDataset(n_classes=n_classes, images_per_class=per_class, image_size=_RENDER_SIZE, seed=seed)
    sizes = np.random.default_rng(seed).integers(_SIZE_RANGE[0], _SIZE_RANGE[1] + 1, size=(len(scenes), 2))
    pictures = []
    for index in range(len(scenes)):
        record = scenes.render(index)[0]
        pixels, box = _resize(record.image, record.boxes[0], int(sizes[index, 0]), int(sizes[index, 1]))
        pictures.append(_Picture(pixels, box, record.label, index % per_class))
    return tuple(pictures)


@lru_cache(maxsize=4)
def _odd_pictures(n_classes: int, seed: int) -> tuple[_Picture, ...]:
    """Three extra pictures of class 0, later saved as grayscale JPEG, CMYK JPEG and RGBA PNG."""
    scenes = ScenesDataset(n_classes=n_classes, images_per_class=len(_ODD_KINDS), image_size=_RENDER_SIZE,
                           seed=seed + _ODD_SEED_OFFSET)
    sizes = np.random.default_rng(seed + _ODD_SEED_OFFSET).integers(
        _SIZE_RANGE[0], _SIZE_RANGE[1] + 1, size=(len(_ODD_KINDS), 2))
    pictures = []
    for index in range(len(_ODD_KINDS)):
        record = scenes.render(index)[0]
        pixels, box = _resize(record.image, record.boxes[0], int(sizes[index, 0]), int(sizes[index, 1]))
        pictures.append(_Picture(pixels, box, 0, index))
    return tuple(pictures)


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _paste(pixels: np.ndarray, taken: list[tuple], source: _Picture) -> tuple | None:
    """Paste a ~1/5-size copy of ``source``'s object into the first corner clear of ``taken`` boxes.

    Changes ``pixels`` in place; returns the pasted rectangle, or None when no corner is free.
    """
    height, width = pixels.shape[:2]
    patch_width, patch_height = max(6, width // 5), max(6, height // 5)
    x0, y0, x1, y1 = source.box
    patch = Image.fromarray(source.pixels[y0:y1, x0:x1]).resize((patch_width, patch_height), Image.Resampling.BOX)
    margin = 1
    for left in (margin, width - margin - patch_width):
        for top in (margin, height - margin - patch_height):
            rect = (left, top, left + patch_width, top + patch_height)
            if not any(_overlaps(rect, box) for box in taken):
                pixels[top:top + patch_height, left:left + patch_width] = np.asarray(patch)
                return rect
    return None


def _objects_with_pastes(pictures: tuple[_Picture, ...], n_classes: int, per_class: int,
                         crowds: bool) -> list[tuple[np.ndarray, list[_Object]]]:
    """VOC/COCO pictures: pixels with pasted objects, and the objects in annotation order.

    The pasted object (class c + 1) comes first so that "first" and "largest" disagree on it; a
    crowd object, when present, comes before everything so that "first" must skip it.
    """
    result = []
    for index, picture in enumerate(pictures):
        pixels = picture.pixels.copy()
        objects = [_Object(picture.box, picture.label)]
        if n_classes > 1:
            # Same position k in the next class: a deterministic picture of another class.
            other_class = (picture.label + 1) % n_classes
            source = pictures[other_class * per_class + picture.k]
            if picture.k % _PASTE_EVERY == 0:
                rect = _paste(pixels, [object_.box for object_ in objects], source)
                if rect is not None:
                    objects.insert(0, _Object(rect, other_class))
            if crowds and picture.k % _CROWD_EVERY == _CROWD_OFFSET:
                rect = _paste(pixels, [object_.box for object_ in objects], source)
                if rect is not None:
                    objects.insert(0, _Object(rect, other_class, crowd=True))
        result.append((pixels, objects))
    return result


def _save(pixels: np.ndarray, path: Path, kind: str = "rgb") -> tuple[int, int]:
    """Write JPEG (quality 95) or, for "rgba", PNG; returns (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if kind == "gray":
        image = image.convert("L")
    elif kind == "cmyk":
        image = image.convert("CMYK")
    elif kind == "rgba":
        # A horizontal alpha ramp: a real transparency for the downstream RGB conversion to handle.
        alpha = np.broadcast_to(np.linspace(96, 255, image.width).astype(np.uint8), (image.height, image.width))
        image.putalpha(Image.fromarray(np.ascontiguousarray(alpha)))
        image.save(path, format="PNG")
        return image.size
    image.save(path, format="JPEG", quality=_JPEG_QUALITY)
    return image.size


def _odd_suffix(kind: str, jpeg: str) -> str:
    return ".png" if kind == "rgba" else jpeg


def _write_voc_xml(path: Path, file_name: str, size: tuple[int, int], objects: list[_Object], names: list[str]) -> None:
    """A PASCAL-VOC XML with 1-based inclusive coordinates (the inverse of ``parse_voc_xml``)."""
    annotation = ElementTree.Element("annotation")
    ElementTree.SubElement(annotation, "filename").text = file_name
    size_element = ElementTree.SubElement(annotation, "size")
    for tag, value in zip(("width", "height", "depth"), (*size, 3)):
        ElementTree.SubElement(size_element, tag).text = str(value)
    for object_ in objects:
        element = ElementTree.SubElement(annotation, "object")
        ElementTree.SubElement(element, "name").text = names[object_.label]
        ElementTree.SubElement(element, "difficult").text = "0"
        box_element = ElementTree.SubElement(element, "bndbox")
        x0, y0, x1, y1 = object_.box
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1)):
            ElementTree.SubElement(box_element, tag).text = str(value)
    ElementTree.indent(annotation)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ElementTree.tostring(annotation, encoding="utf-8", xml_declaration=False) + b"\n")


def _write_imagenet(out: Path, pictures, odd, n_classes: int, unboxed_per_class: int) -> dict:
    wnids = [f"n{c + 1:08d}" for c in range(n_classes)]
    root, annotations = out / "train", out / "Annotation"
    for wnid in wnids:
        # An empty annotation folder marks a class with no boxes (boxed_per_class=0) rather than an error.
        (annotations / wnid).mkdir(parents=True, exist_ok=True)
    items = [(p, f"{wnids[p.label]}_{p.k}", "rgb", p.k >= unboxed_per_class) for p in pictures]
    items += [(p, f"{wnids[0]}_odd_{kind}", kind, True) for p, kind in zip(odd, _ODD_KINDS)]
    for picture, stem, kind, boxed in items:
        file_name = stem + _odd_suffix(kind, ".JPEG")
        size = _save(picture.pixels, root / wnids[picture.label] / file_name, kind)
        if boxed:
            _write_voc_xml(annotations / wnids[picture.label] / f"{stem}.xml", file_name, size,
                           [_Object(picture.box, picture.label)], wnids)
    return {"dataset": "imagenet", "root": str(root), "annotations": None}


def _write_voc(out: Path, pictures, odd, names: list[str], per_class: int) -> dict:
    annotated = _objects_with_pastes(pictures, len(names), per_class, crowds=False)
    items = [(pixels, f"ex_{index:06d}", "rgb", objects) for index, (pixels, objects) in enumerate(annotated)]
    items += [(p.pixels, f"ex_odd_{kind}", kind, [_Object(p.box, p.label)]) for p, kind in zip(odd, _ODD_KINDS)]
    for pixels, stem, kind, objects in items:
        file_name = stem + _odd_suffix(kind, ".jpg")
        size = _save(pixels, out / "JPEGImages" / file_name, kind)
        _write_voc_xml(out / "Annotations" / f"{stem}.xml", file_name, size, objects, names)
    return {"dataset": "voc", "root": str(out), "annotations": None}


def _write_coco(out: Path, pictures, odd, names: list[str], per_class: int) -> dict:
    annotated = _objects_with_pastes(pictures, len(names), per_class, crowds=True)
    items = [(pixels, f"ex_{index:06d}", "rgb", objects) for index, (pixels, objects) in enumerate(annotated)]
    items += [(p.pixels, f"ex_odd_{kind}", kind, [_Object(p.box, p.label)]) for p, kind in zip(odd, _ODD_KINDS)]
    images, annotations = [], []
    for image_id, (pixels, stem, kind, objects) in enumerate(items, start=1):
        file_name = stem + _odd_suffix(kind, ".jpg")
        width, height = _save(pixels, out / "images" / file_name, kind)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for object_ in objects:
            x0, y0, x1, y1 = object_.box
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": object_.label + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": int(object_.crowd),
            })
    categories = [{"id": c + 1, "name": name, "supercategory": "scenes"} for c, name in enumerate(names)]
    path = out / "annotations" / "instances.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return {"dataset": "coco", "root": str(out / "images"), "annotations": str(path)}


def _write_manifest(out: Path, pictures, odd, names: list[str], unboxed_per_class: int) -> dict:
    items = [(p, f"{p.k:04d}", "rgb", p.k >= unboxed_per_class) for p in pictures]
    items += [(p, f"odd_{kind}", kind, True) for p, kind in zip(odd, _ODD_KINDS)]
    rows = []
    for picture, stem, kind, boxed in items:
        relative = f"images/{names[picture.label]}/{stem}{_odd_suffix(kind, '.jpg')}"
        _save(picture.pixels, out / relative, kind)
        rows.append((relative, names[picture.label], json.dumps([list(picture.box)]) if boxed else ""))
    path = out / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "label", "boxes"))
        writer.writerows(rows)
    return {"dataset": "manifest", "root": str(out), "annotations": str(path)}


def write_example(layout: str, out: Path, n_classes: int = 3, boxed_per_class: int = 24,
                  unboxed_per_class: int = 8, seed: int = 0, odd_images: bool = False) -> dict:
    """Write a tiny dataset in ``layout`` under ``out`` (a new or empty folder); return its config keys.

    Each class has ``boxed_per_class + unboxed_per_class`` JPEGs (quality 95) of its own size
    (width and height in [48, 96]); in ImageNet and manifest layouts the first ``unboxed_per_class``
    of a class have no boxes, while VOC and COCO box every image (their label comes from the
    annotation). See the module docstring for file names, pasted second objects and crowd boxes.
    ``odd_images`` adds three boxed images to class 0: a grayscale JPEG, a CMYK JPEG and an RGBA PNG.
    Deterministic: the same arguments write byte-identical files.

    Returns ``{"dataset": layout, "root": str, "annotations": str or None}``: the arguments of the
    layout's reader (for "manifest", ``annotations`` is the manifest file and ``root`` its folder).

    Example:
        >>> keys = write_example("coco", Path("/tmp/example-coco"))  # doctest: +SKIP
        >>> len(read_coco(Path(keys["root"]), Path(keys["annotations"])))
        96
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown example layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if n_classes < 1 or boxed_per_class < 0 or unboxed_per_class < 0 or boxed_per_class + unboxed_per_class < 1:
        raise DataError(
            f"example {layout}: n_classes={n_classes}, boxed_per_class={boxed_per_class}, "
            f"unboxed_per_class={unboxed_per_class}; expected at least one class and one image per class"
        )
    out = Path(os.path.abspath(out))
    # Writing over another example would mix two datasets (stale images without annotations).
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"example {layout}: {out} exists and is not an empty folder; expected a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    per_class = boxed_per_class + unboxed_per_class
    pictures = _pictures(n_classes, per_class, seed)
    odd = _odd_pictures(n_classes, seed) if odd_images else ()
    names = ScenesDataset(n_classes=n_classes, images_per_class=1).class_names
    if layout == "imagenet":
        return _write_imagenet(out, pictures, odd, n_classes, unboxed_per_class)
    if layout == "voc":
        return _write_voc(out, pictures, odd, names, per_class)
    if layout == "coco":
        return _write_coco(out, pictures, odd, names, per_class)
    return _write_manifest(out, pictures, odd, names, unboxed_per_class)


def write_examples(out: Path, layouts=LAYOUTS, **kwargs) -> dict[str, dict]:
    """:func:`write_example` for each layout into ``out/<layout>/``; returns ``{layout: keys}``.

    Example:
        >>> sorted(write_examples(Path("/tmp/examples"), layouts=("voc", "manifest")))  # doctest: +SKIP
        ['manifest', 'voc']
    """
    return {layout: write_example(layout, Path(out) / layout, **kwargs) for layout in layouts}
