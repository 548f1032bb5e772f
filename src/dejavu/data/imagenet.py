"""Datasets annotated with PASCAL-VOC XML: ImageNet ILSVRC-2012 (train + bounding boxes) and Pascal VOC.

ImageNet's train images sit in one folder per class (``<root>/<wnid>/<wnid>_<n>.JPEG``) and the
boxes, released for a subset of them, in ``<annotations>/<wnid>/<wnid>_<n>.xml``; the class comes
from the folder. Pascal VOC keeps all images in ``JPEGImages/`` and names the objects' classes in
``Annotations/<stem>.xml``, so an image's label is chosen among its objects.

Both XML flavours give 1-based, inclusive pixel coordinates (a box covering the whole of a
500-pixel-wide image runs from xmin=1 to xmax=500). Entries carry 0-based half-open boxes, so
``(xmin - 1, ymin - 1, xmax, ymax)``.

XML is parsed with defusedxml: annotation files come from downloads and must not be able to expand
entities (the "billion laughs" attack) or fetch external resources.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as SafeElementTree
import numpy as np

from dejavu.data.entries import (
    Entry, check_entries, check_label_policy, has_control_character, is_image_file, keep_classes, no_boxes,
    pick_object, require_folder, shown,
)
from dejavu.errors import DataError

_COORDINATES = ("xmin", "ymin", "xmax", "ymax")


def parse_voc_xml(path: Path) -> list[tuple[str, np.ndarray, bool]]:
    """The objects of one PASCAL-VOC XML file, in file order.

    Returns (name, box, difficult) per ``<object>``: box is float64 (4,) 0-based half-open xyxy,
    i.e. ``(xmin - 1, ymin - 1, xmax, ymax)`` of the file's 1-based inclusive coordinates.
    Raises :class:`DataError` naming the file for unparsable XML, an XML that declares entities,
    no ``<object>``, an object without ``<name>`` or ``<bndbox>``, or a non-numeric coordinate.

    Example:
        >>> parse_voc_xml(Path("Annotation/n01440764/n01440764_18.xml"))  # doctest: +SKIP
        [('n01440764', array([ 15.,  64., 324., 311.]), False)]
    """
    try:
        tree = SafeElementTree.parse(os.fspath(path))
    except defusedxml.DefusedXmlException as exc:
        raise DataError(
            f"{path}: refused to parse ({type(exc).__name__}: the XML declares entities or external "
            "references); expected a plain PASCAL-VOC annotation"
        ) from None
    except SafeElementTree.ParseError as exc:
        raise DataError(f"{path}: not valid XML ({exc}); expected a PASCAL-VOC annotation") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the annotation ({exc.strerror or exc})") from None
    except (LookupError, ValueError) as exc:  # e.g. an encoding Python does not know
        raise DataError(f"{path}: not readable XML ({exc}); expected a UTF-8 PASCAL-VOC annotation") from None
    objects = tree.getroot().findall("object")
    if not objects:
        raise DataError(f"{path}: found no <object>; expected at least one <object> with <name> and <bndbox>")
    parsed = []
    for index, element in enumerate(objects):
        name = (element.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{path}: <object> {index} (counting from 0) has no <name>; expected the class name")
        if has_control_character(name):
            raise DataError(f"{path}: <object> {index} has the <name> {name!r}, which holds a control character; "
                            "expected a class name on one line")
        box_element = element.find("bndbox")
        if box_element is None:
            raise DataError(f"{path}: <object> {index} ({name}) has no <bndbox>; expected xmin, ymin, xmax, ymax")
        values = []
        for coordinate in _COORDINATES:
            text = box_element.findtext(coordinate)
            try:
                value = float(text)
            except (TypeError, ValueError):
                raise DataError(
                    f"{path}: <object> {index} ({name}) has <{coordinate}> {shown(text, 80)}; expected a number"
                ) from None
            if not np.isfinite(value):
                raise DataError(
                    f"{path}: <object> {index} ({name}) has <{coordinate}> {shown(text, 80)}; expected a finite number"
                )
            values.append(value)
        xmin, ymin, xmax, ymax = values
        difficult = (element.findtext("difficult") or "0").strip() == "1"
        parsed.append((name, np.array([xmin - 1, ymin - 1, xmax, ymax], dtype=np.float64), difficult))
    return parsed


def _listing(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` (scandir: one system call per folder); :class:`DataError` naming it when it
    cannot be listed."""
    try:
        with os.scandir(folder) as listing:
            return list(listing)
    except OSError as exc:
        raise DataError(
            f"{folder}: cannot list the folder ({exc.strerror or exc}); expected a readable folder"
        ) from None


def _is_file(item: os.DirEntry) -> bool:
    try:
        return item.is_file()
    except OSError:  # a name the file system cannot look up: not one of our files
        return False


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(Path(item.path) for item in _listing(folder) if is_image_file(item.name) and _is_file(item))


def _xml_stems(folder: Path) -> set[str]:
    """Stems of the ``.xml`` files in ``folder`` (one listing instead of one ``exists`` per image)."""
    return {item.name[:-4] for item in _listing(folder) if item.name.lower().endswith(".xml") and _is_file(item)}


def _stack_boxes(objects: list[tuple[str, np.ndarray, bool]]) -> np.ndarray:
    return np.stack([box for _, box, _ in objects]) if objects else no_boxes()


def read_imagenet(root: Path, annotations: Path | None = None, classes: list[str] | None = None) -> list[Entry]:
    """List an ILSVRC-2012 train folder with its bounding-box XMLs, sorted by id.

    Images: ``<root>/<wnid>/*.{JPEG,jpg,png}`` (any case); boxes: ``<annotations>/<wnid>/<stem>.xml``
    (default ``annotations``: ``<root>/../Annotation``). id = image stem, label = wnid (the folder,
    not the XML's object names); every object's box is kept; an image without an XML is unboxed
    (boxes (0, 4)); an XML without an image is ignored. ``classes`` keeps only those wnids.

    Raises :class:`DataError` for a missing root or annotation folder, a root with no class folders,
    a class folder with images but no ``<annotations>/<wnid>`` folder (an empty one is fine: the class
    is unboxed), a wnid of ``classes`` without a folder, and any XML or box error.

    Example:
        >>> entries = read_imagenet(Path("/data/ILSVRC2012/train"), classes=["n01440764"])  # doctest: +SKIP
        >>> entries[0].id, entries[0].label, entries[0].boxes.shape
        ('n01440764_10026', 'n01440764', (1, 4))
    """
    root = Path(os.path.abspath(root))
    what = f"imagenet root '{root}'"
    require_folder(root, what, "the ILSVRC-2012 train folder with one sub-folder per wnid")
    # The kernel resolves '<root>/..' through a symlinked root to the target's parent; so does resolve().
    annotations = root.resolve().parent / "Annotation" if annotations is None else Path(os.path.abspath(annotations))
    require_folder(annotations, what, "the bounding-box folder with one sub-folder of XMLs per wnid")
    folders = sorted(item.name for item in _listing(root) if item.is_dir() and not item.name.startswith("."))
    if not folders:
        raise DataError(f"{what}: found no class folders in {root}; expected one folder per wnid (e.g. n01440764/)")
    if classes is not None:
        missing = sorted(set(classes) - set(folders))
        if missing:
            raise DataError(
                f"{what}: classes {', '.join(missing)} have no folder in {root}; "
                f"expected a subset of the {len(folders)} folders found (e.g. {', '.join(folders[:3])})"
            )
        wanted = set(classes)
        folders = [name for name in folders if name in wanted]

    entries = []
    for wnid in folders:
        images = _image_files(root / wnid)
        if not images:
            continue
        box_folder = annotations / wnid
        if not box_folder.is_dir():
            found = "is not a folder" if box_folder.exists() else "does not exist"
            raise DataError(
                f"{what}: class folder {root / wnid} has {len(images)} images but {box_folder} {found}; "
                "expected a folder of XMLs (an empty folder marks a class without boxes)"
            )
        boxed = _xml_stems(box_folder)
        for image in images:
            stem = image.stem
            if stem in boxed:
                xml = box_folder / f"{stem}.xml"
                entries.append(Entry(stem, image, wnid, _stack_boxes(parse_voc_xml(xml)), str(xml)))
            else:
                entries.append(Entry(stem, image, wnid, no_boxes(), ""))
    return check_entries(entries, what)


def read_voc(root: Path, annotations: Path | None = None, label_policy: str = "largest",
             classes: list[str] | None = None) -> list[Entry]:
    """List a Pascal VOC folder (``JPEGImages/`` + ``Annotations/``), sorted by id.

    Images: ``<root>/JPEGImages/<stem>.jpg`` (also .jpeg/.png); objects: ``<annotations>/<stem>.xml``
    (default ``<root>/Annotations``). label = the class of the largest-area object ("largest") or of
    the first object ("first"); every object's box is kept, whatever its class or difficult flag,
    because the periphery crop must avoid all of them. Images without an XML have no label: they
    are skipped with one warning giving the count. ``classes`` keeps images whose label is in it.

    Raises :class:`DataError` for a missing folder, an unknown ``label_policy``, a class of
    ``classes`` that labels no image, and any XML or box error.

    Example:
        >>> entries = read_voc(Path("VOCdevkit/VOC2012"), label_policy="first")  # doctest: +SKIP
        >>> entries[0].id, entries[0].label
        ('2007_000027', 'person')
    """
    root = Path(os.path.abspath(root))
    what = f"voc root '{root}'"
    check_label_policy(label_policy, what)
    require_folder(root, what, "a Pascal VOC folder holding JPEGImages/ and Annotations/")
    image_folder = root / "JPEGImages"
    require_folder(image_folder, what, "the images as JPEGImages/<stem>.jpg")
    annotations = root / "Annotations" if annotations is None else Path(os.path.abspath(annotations))
    require_folder(annotations, what, "the XMLs as Annotations/<stem>.xml")

    boxed = _xml_stems(annotations)
    entries, unlabelled = [], 0
    for image in _image_files(image_folder):
        if image.stem not in boxed:
            unlabelled += 1
            continue
        xml = annotations / f"{image.stem}.xml"
        objects = parse_voc_xml(xml)
        boxes = _stack_boxes(objects)
        label = objects[pick_object(boxes, label_policy)][0]
        entries.append(Entry(image.stem, image, label, boxes, str(xml)))
    if unlabelled:
        warnings.warn(f"{what}: skipped {unlabelled} images without an XML in {annotations} (no label)", stacklevel=2)
    return check_entries(keep_classes(entries, classes, f"{what} (label policy {label_policy!r})"), what)
