import csv
import filecmp
import json
import os
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dejavu.data.coco import read_coco
from dejavu.data.entries import Entry, check_entries, no_boxes
from dejavu.data.examples import LAYOUTS, write_example, write_examples
from dejavu.data.imagenet import parse_voc_xml, read_imagenet, read_voc
from dejavu.data.manifest import read_manifest
from dejavu.data.scenes import ScenesDataset
from dejavu.errors import DataError

# Small enough to write in ~0.1 s, large enough for every 4th (pasted) and 8th+2 (crowd) image.
N_CLASSES, BOXED, UNBOXED = 3, 8, 3
PER_CLASS = BOXED + UNBOXED
SIZES = {"n_classes": N_CLASSES, "boxed_per_class": BOXED, "unboxed_per_class": UNBOXED}
NAMES = ScenesDataset(n_classes=N_CLASSES, images_per_class=1).class_names


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, dict]:
    """Every layout written once with the three odd images (tests only read it)."""
    return write_examples(tmp_path_factory.mktemp("examples"), odd_images=True, **SIZES)


def _read(keys: dict, **options) -> list[Entry]:
    root, annotations = Path(keys["root"]), keys["annotations"]
    annotations = None if annotations is None else Path(annotations)
    if keys["dataset"] == "imagenet":
        return read_imagenet(root, annotations, **options)
    if keys["dataset"] == "voc":
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the examples label every VOC image
            return read_voc(root, annotations, **options)
    if keys["dataset"] == "coco":
        return read_coco(root, annotations, **options)
    return read_manifest(annotations, root)


def _xml_boxes(path: Path) -> list[list[float]]:
    """The file's 1-based inclusive coordinates, read without the reader under test."""
    rows = []
    for element in ElementTree.parse(path).getroot().iter("bndbox"):
        xmin, ymin, xmax, ymax = (float(element.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        rows.append([xmin - 1, ymin - 1, xmax, ymax])
    return rows


def _write_xml(path: Path, objects: list[tuple[str, tuple]], prefix: str = "") -> Path:
    body = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
        f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>"
        for name, box in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{prefix}<annotation><filename>x.jpg</filename>{body}</annotation>")
    return path


def _write_image(path: Path, width: int = 40, height: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 120, dtype=np.uint8)).save(path)
    return path


def _check_common(entries: list[Entry], expected_count: int) -> None:
    ids = [entry.id for entry in entries]
    assert len(entries) == expected_count and ids == sorted(ids) and len(set(ids)) == len(ids)
    for entry in entries:
        assert entry.path.is_absolute() and entry.path.is_file()
        assert entry.boxes.dtype == np.float64 and entry.boxes.ndim == 2 and entry.boxes.shape[1] == 4
        with Image.open(entry.path) as image:
            width, height = image.size
        # Every box lies inside its own image's pixels.
        assert (entry.boxes[:, :2] >= 0).all()
        assert (entry.boxes[:, 2] <= width).all() and (entry.boxes[:, 3] <= height).all()


# ---------------------------------------------------------------------------------------------- round trips


def test_imagenet_round_trip_labels_boxes_and_unboxed_images(examples):
    entries = _read(examples["imagenet"])
    _check_common(entries, N_CLASSES * PER_CLASS + 3)
    assert {entry.label for entry in entries} == {f"n{c + 1:08d}" for c in range(N_CLASSES)}
    unboxed = [entry for entry in entries if len(entry.boxes) == 0]
    assert len(unboxed) == N_CLASSES * UNBOXED
    assert all(entry.boxes.shape == (0, 4) and entry.annotation == "" for entry in unboxed)
    for entry in entries:
        if len(entry.boxes):
            assert entry.annotation.endswith(f"{entry.label}/{entry.id}.xml")
            np.testing.assert_array_equal(entry.boxes, _xml_boxes(Path(entry.annotation)))
    # classes restricts to those wnids.
    assert {entry.label for entry in _read(examples["imagenet"], classes=["n00000002"])} == {"n00000002"}


def test_example_boxes_cover_every_object_pixel_after_resizing(examples):
    """floor/ceil scaling of the box and BOX resampling keep the whole object inside the box."""
    scenes = ScenesDataset(n_classes=N_CLASSES, images_per_class=PER_CLASS, image_size=64, seed=0)
    for entry in _read(examples["imagenet"]):
        if not len(entry.boxes) or "odd" in entry.id:
            continue
        index = (int(entry.label[1:]) - 1) * PER_CLASS + int(entry.id.rsplit("_", 1)[1])
        _, mask, _ = scenes.render(index)
        with Image.open(entry.path) as image:
            size = image.size
        covered = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)) > 0
        x0, y0, x1, y1 = entry.boxes[0].astype(int)
        ys, xs = np.nonzero(covered)
        assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
        # And the box is tight up to the one pixel that flooring / ceiling may add.
        assert xs.min() - x0 <= 1 and x1 - xs.max() <= 2 and ys.min() - y0 <= 1 and y1 - ys.max() <= 2


def test_voc_round_trip_and_label_policies_on_pasted_objects(examples):
    largest, first = _read(examples["voc"]), _read(examples["voc"], label_policy="first")
    _check_common(largest, N_CLASSES * PER_CLASS + 3)
    assert [entry.id for entry in largest] == [entry.id for entry in first]
    disagreements = 0
    for by_size, by_order in zip(largest, first):
        np.testing.assert_array_equal(by_size.boxes, _xml_boxes(Path(by_size.annotation)))
        assert len(by_size.boxes) >= 1  # VOC boxes every image, unboxed_per_class included
        if "odd" in by_size.id:
            assert by_size.label == NAMES[0]
            continue
        index = int(by_size.id.split("_")[1])
        true_class, k = divmod(index, PER_CLASS)
        assert by_size.label == NAMES[true_class]  # the pasted object is smaller
        if k % 4 == 0 and len(by_size.boxes) == 2:
            assert by_order.label == NAMES[(true_class + 1) % N_CLASSES]  # pasted object is written first
            disagreements += 1
        else:
            assert by_order.label == by_size.label
    assert disagreements >= N_CLASSES
    assert {entry.label for entry in _read(examples["voc"], classes=[NAMES[1]])} == {NAMES[1]}


def test_coco_round_trip_xywh_to_xyxy_and_crowds(examples):
    keys = examples["coco"]
    entries = _read(keys)
    _check_common(entries, N_CLASSES * PER_CLASS + 3)
    data = json.loads(Path(keys["annotations"]).read_text())
    by_stem = {Path(image["file_name"]).stem: image["id"] for image in data["images"]}
    crowded = 0
    for entry in entries:
        rows = [a for a in data["annotations"] if a["image_id"] == by_stem[entry.id]]
        expected = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in rows)]
        np.testing.assert_array_equal(entry.boxes, expected)
        if any(a["iscrowd"] for a in rows):
            crowded += 1
            # The crowd box is foreground (kept) and listed first, yet never the label.
            assert rows[0]["iscrowd"] == 1
            for policy in ("first", "largest"):
                (again,) = [e for e in _read(keys, label_policy=policy) if e.id == entry.id]
                assert again.label == NAMES[int(entry.id.split("_")[1]) // PER_CLASS]
    assert crowded >= N_CLASSES


def test_manifest_round_trip_csv_and_jsonl(examples, tmp_path):
    keys = examples["manifest"]
    entries = _read(keys)
    _check_common(entries, N_CLASSES * PER_CLASS + 3)
    assert sum(len(entry.boxes) == 0 for entry in entries) == N_CLASSES * UNBOXED
    with open(keys["annotations"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_id = {entry.id: entry for entry in entries}
    for line, row in enumerate(rows, start=2):
        entry = by_id[row["path"].rsplit(".", 1)[0]]  # default id: the path without suffix
        assert entry.label == row["label"] and entry.annotation == f"{keys['annotations']}:{line}"
        np.testing.assert_array_equal(entry.boxes, json.loads(row["boxes"]) if row["boxes"] else no_boxes())
    # The same rows as JSONL with explicit ids and an image root elsewhere.
    jsonl = tmp_path / "copy.jsonl"
    jsonl.write_text("".join(
        json.dumps({"path": row["path"], "label": row["label"], "id": f"x{i}",
                    "boxes": json.loads(row["boxes"]) if row["boxes"] else []}) + "\n\n"
        for i, row in enumerate(rows)
    ))
    again = read_manifest(jsonl, root=Path(keys["root"]))
    assert len(again) == len(entries) and again[0].id == "x0" and again[0].annotation.endswith("copy.jsonl:1")
    assert {entry.path for entry in again} == {entry.path for entry in entries}


def test_odd_images_are_grayscale_cmyk_and_rgba_and_boxed(examples):
    for layout in LAYOUTS:
        odd = {entry.id: entry for entry in _read(examples[layout]) if "odd" in entry.id}
        assert len(odd) == 3
        modes = set()
        for entry in odd.values():
            assert len(entry.boxes) == 1
            with Image.open(entry.path) as image:
                modes.add(image.mode)
        assert modes == {"L", "CMYK", "RGBA"}, layout


def test_examples_are_deterministic_per_seed(tmp_path):
    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    options = {"n_classes": 2, "boxed_per_class": 4, "unboxed_per_class": 1, "odd_images": True}
    first = write_examples(tmp_path / "a", **options)
    second = write_examples(tmp_path / "b", **options)
    third = write_examples(tmp_path / "c", seed=1, **options)
    assert set(first) == set(LAYOUTS) and set(second) == set(LAYOUTS) and set(third) == set(LAYOUTS)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a") != files(tmp_path / "c")
    assert not filecmp.cmp(tmp_path / "a/voc/JPEGImages/ex_000000.jpg", tmp_path / "c/voc/JPEGImages/ex_000000.jpg",
                           shallow=False)


def test_write_example_refuses_a_used_folder_and_an_unknown_layout(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="used.*not an empty folder"):
        write_example("voc", tmp_path / "used")
    with pytest.raises(DataError, match="'yolo'.*imagenet, voc, coco, manifest"):
        write_example("yolo", tmp_path / "new")


# ---------------------------------------------------------------------------------------------- label policies


def test_voc_label_policy_on_a_hand_written_xml(tmp_path):
    _write_image(tmp_path / "JPEGImages" / "a.jpg")
    # The first object is small; the second is larger.
    _write_xml(tmp_path / "Annotations" / "a.xml", [("dog", (1, 1, 5, 5)), ("cat", (3, 3, 30, 20))])
    assert read_voc(tmp_path)[0].label == "cat"
    assert read_voc(tmp_path, label_policy="first")[0].label == "dog"
    np.testing.assert_array_equal(read_voc(tmp_path)[0].boxes, [[0, 0, 5, 5], [2, 2, 30, 20]])
    with pytest.raises(DataError, match="'biggest'.*largest, first"):
        read_voc(tmp_path, label_policy="biggest")


def test_voc_skips_images_without_xml_with_one_warning(tmp_path):
    for stem in ("a", "b", "c"):
        _write_image(tmp_path / "JPEGImages" / f"{stem}.jpg")
    _write_xml(tmp_path / "Annotations" / "a.xml", [("cat", (1, 1, 5, 5))])
    _write_xml(tmp_path / "Annotations" / "orphan.xml", [("cat", (1, 1, 5, 5))])  # no image: ignored
    with pytest.warns(UserWarning, match="skipped 2 images") as caught:
        entries = read_voc(tmp_path)
    assert len(caught) == 1 and [entry.id for entry in entries] == ["a"]
    with pytest.raises(DataError, match="'dog' label no image"), pytest.warns(UserWarning):
        read_voc(tmp_path, classes=["dog"])


def _coco(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None) -> Path:
    _write_image(tmp_path / "images" / "a.jpg")
    data = {
        "images": images if images is not None else [{"id": 7, "file_name": "a.jpg"}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "people"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_label_policy_and_crowd_box_kept_but_not_chosen(tmp_path):
    path = _coco(tmp_path, [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [0, 0, 39, 29], "iscrowd": 1},  # largest and first
        {"id": 2, "image_id": 7, "category_id": 2, "bbox": [1, 1, 4, 4], "iscrowd": 0},
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [10, 5, 20, 15], "iscrowd": 0},
    ])
    (largest,) = read_coco(tmp_path / "images", path)
    (first,) = read_coco(tmp_path / "images", path, label_policy="first")
    assert (largest.label, first.label) == ("cat", "dog")
    np.testing.assert_array_equal(largest.boxes, [[0, 0, 39, 29], [1, 1, 5, 5], [10, 5, 30, 20]])
    assert largest.id == "a" and largest.annotation.endswith("instances.json (image id 7)")
    with pytest.raises(DataError, match="no images"):
        read_coco(tmp_path / "images", path, classes=["dog"])


def test_coco_image_with_only_crowds_takes_its_label_from_them(tmp_path):
    path = _coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [0, 0, 9, 9], "iscrowd": 1}])
    assert read_coco(tmp_path / "images", path)[0].label == "people"


def test_coco_skips_images_without_annotations_with_one_warning(tmp_path):
    _write_image(tmp_path / "images" / "b.jpg")
    images = [{"id": 7, "file_name": "a.jpg"}, {"id": 8, "file_name": "b.jpg"}, {"id": 9, "file_name": "c.jpg"}]
    path = _coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 9, 9]}], images=images)
    with pytest.warns(UserWarning, match="skipped 2 images") as caught:
        entries = read_coco(tmp_path / "images", path)
    assert len(caught) == 1 and [entry.id for entry in entries] == ["a"]


# ---------------------------------------------------------------------------------------------- bad inputs


def test_parse_voc_xml_errors_name_the_file(tmp_path):
    good = _write_xml(tmp_path / "good.xml", [("cat", (1, 2, 3, 4))])
    (name, box, difficult), = parse_voc_xml(good)
    assert name == "cat" and box.tolist() == [0, 1, 3, 4] and difficult is False
    cases = {
        "no_object.xml": ("<annotation><filename>x</filename></annotation>", "expected at least one <object>"),
        "broken.xml": ("<annotation><object>", "not valid XML"),
        "no_name.xml": ("<annotation><object><bndbox/></object></annotation>", "no <name>"),
        "no_box.xml": ("<annotation><object><name>cat</name></object></annotation>", "no <bndbox>"),
        "text.xml": ("<annotation><object><name>cat</name><bndbox><xmin>one</xmin><ymin>1</ymin><xmax>2</xmax>"
                     "<ymax>2</ymax></bndbox></object></annotation>", "<xmin> 'one'; expected a number"),
    }
    for file_name, (text, message) in cases.items():
        (tmp_path / file_name).write_text(text)
        with pytest.raises(DataError, match=message) as caught:
            parse_voc_xml(tmp_path / file_name)
        assert file_name in str(caught.value)


def test_xml_with_entities_is_refused_before_expansion(tmp_path):
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 9))
        + "]>"
    )
    path = _write_xml(tmp_path / "laughs.xml", [("&lol8;", (1, 1, 5, 5))], prefix=laughs)
    with pytest.raises(DataError, match="laughs.xml.*refused") as caught:
        parse_voc_xml(path)
    assert "EntitiesForbidden" in str(caught.value)


@pytest.fixture
def tiny_imagenet(tmp_path) -> Path:
    """Two classes with one boxed image each, in the default ``<root>/../Annotation`` layout."""
    for wnid in ("n01", "n02"):
        _write_image(tmp_path / "train" / wnid / f"{wnid}_1.JPEG")
        _write_xml(tmp_path / "Annotation" / wnid / f"{wnid}_1.xml", [(wnid, (1, 1, 10, 10))])
    return tmp_path / "train"


def test_imagenet_folder_errors_name_the_path(tiny_imagenet):
    root = tiny_imagenet
    assert [entry.id for entry in read_imagenet(root)] == ["n01_1", "n02_1"]
    with pytest.raises(DataError, match="missing_root.*does not exist"):
        read_imagenet(root.parent / "missing_root")
    with pytest.raises(DataError, match="no_boxes.*does not exist"):
        read_imagenet(root, annotations=root.parent / "no_boxes")
    with pytest.raises(DataError, match="n99 have no folder"):
        read_imagenet(root, classes=["n01", "n99"])
    (root.parent / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*no class folders"):
        read_imagenet(root.parent / "empty", annotations=root.parent / "Annotation")
    # A class folder with images but no annotation folder is an error; an empty annotation folder is not.
    _write_image(root / "n03" / "n03_1.jpg")
    with pytest.raises(DataError, match=r"n03.*Annotation/n03 does not exist"):
        read_imagenet(root)
    (root.parent / "Annotation" / "n03").mkdir()
    (unboxed,) = [entry for entry in read_imagenet(root) if entry.label == "n03"]
    assert unboxed.boxes.shape == (0, 4)


def test_degenerate_box_names_the_xml_object_and_values(tiny_imagenet):
    xml = tiny_imagenet.parent / "Annotation" / "n02" / "n02_1.xml"
    _write_xml(xml, [("n02", (1, 1, 5, 5)), ("n02", (8, 2, 6, 9))])
    with pytest.raises(DataError, match=r"n02_1\.xml: object 1 .*degenerate box x0=7, y0=1, x1=6, y1=9"):
        read_imagenet(tiny_imagenet)


def test_voc_folder_errors(tmp_path):
    with pytest.raises(DataError, match="JPEGImages.*does not exist"):
        read_voc(tmp_path)
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DataError, match="Annotations.*does not exist"):
        read_voc(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda data: data.pop("categories"), "'categories' is missing"),
    (lambda data: data["annotations"][0].update(image_id=99), "annotation id 5 has image_id 99, which is not among"),
    (lambda data: data["annotations"][0].update(category_id=42), "annotation id 5 has category_id 42"),
    (lambda data: data["annotations"][0].update(bbox=[1, 2, 3]), r"annotation id 5 has bbox \[1, 2, 3\]"),
    (lambda data: data["images"][0].update(file_name="gone.jpg"), "gone.jpg.*is not a file"),
    (lambda data: data["images"].append({"id": 7, "file_name": "b.jpg"}), "repeats image id 7"),
    (lambda data: data["annotations"][0].update(image_id=[7]), r"annotations\[0\] has image_id \[7\]"),
])
def test_coco_errors_name_the_json(tmp_path, change, message):
    path = _coco(tmp_path, [{"id": 5, "image_id": 7, "category_id": 1, "bbox": [0, 0, 9, 9]}])
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message) as caught:
        read_coco(tmp_path / "images", path)
    assert "instances.json" in str(caught.value)


def test_coco_invalid_json_and_unknown_class(tmp_path):
    path = _coco(tmp_path, [{"id": 5, "image_id": 7, "category_id": 1, "bbox": [0, 0, 9, 9]}])
    with pytest.raises(DataError, match="instances.json.*horse"):
        read_coco(tmp_path / "images", path, classes=["horse"])
    path.write_text("{")
    with pytest.raises(DataError, match="instances.json: not valid JSON"):
        read_coco(tmp_path / "images", path)


@pytest.mark.parametrize("text, message", [
    ("file,label\na.jpg,cat\n", r"m\.csv:1: the header has no column path \(found: file, label\)"),
    ("path,label\na.jpg,cat\nmissing.jpg,cat\n", r"m\.csv:3: image .*missing\.jpg is missing"),
    ("path,label\na.jpg, \n", r"m\.csv:2: label is ' '"),
    ("path,label,boxes\na.jpg,cat,\"[[1,2,3]]\"\n", r"m\.csv:2: boxes \[\[1, 2, 3\]\]"),
    ("path,label,boxes\na.jpg,cat,\"[[1,2,3,\"\n", r"m\.csv:2: boxes .* not JSON"),
    ("path,label,id\na.jpg,cat,one\n./sub/../a.jpg,cat,two\n", r"m\.csv.*a\.jpg is listed under two ids, 'one'.*'two'"),
    ("path,label,id\na.jpg,cat,same\nb.jpg,dog,same\n", r"id 'same' appears twice: .*m\.csv:2.* and .*m\.csv:3"),
    ("path,label,boxes\na.jpg,cat,\"[[5,1,5,9]]\"\n", r"m\.csv:2: object 0 .*degenerate box x0=5, y0=1, x1=5, y1=9"),
])
def test_manifest_csv_errors_name_file_and_line(tmp_path, text, message):
    _write_image(tmp_path / "a.jpg")
    _write_image(tmp_path / "b.jpg")
    (tmp_path / "sub").mkdir()
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_manifest(tmp_path / "m.csv")


def test_manifest_jsonl_errors_and_suffix(tmp_path):
    _write_image(tmp_path / "a.jpg")
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "a.jpg", "label": "cat"}\n{"path": "a.jpg",\n')
    with pytest.raises(DataError, match=r"m\.jsonl:2: invalid JSON"):
        read_manifest(path)
    path.write_text('{"path": "a.jpg", "label": "cat"}\n{"image": "a.jpg", "label": "cat"}\n')
    with pytest.raises(DataError, match=r"m\.jsonl:2: no key path \(found: image, label\)"):
        read_manifest(path)
    (tmp_path / "m.txt").write_text("")
    with pytest.raises(DataError, match=r"m\.txt.*expected \.csv or \.jsonl"):
        read_manifest(tmp_path / "m.txt")


def test_a_symlink_to_a_listed_image_is_the_same_file(tmp_path):
    _write_image(tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "alias.jpg")
    (tmp_path / "m.csv").write_text("path,label\na.jpg,cat\nalias.jpg,cat\n")
    with pytest.raises(DataError, match=r"a\.jpg is listed under two ids, 'a' .* and 'alias'"):
        read_manifest(tmp_path / "m.csv")


# ---------------------------------------------------------------------------------------------- check_entries


def test_check_entries_sorts_and_rejects_bad_boxes_and_empty_lists(tmp_path):
    a, b = _write_image(tmp_path / "a.jpg"), _write_image(tmp_path / "b.jpg")
    good = [Entry("b", b, "dog", no_boxes(), ""), Entry("a", a, "cat", np.array([[0.0, 0.0, 2.0, 2.0]]), "a.xml")]
    assert [entry.id for entry in check_entries(good, "test")] == ["a", "b"]
    with pytest.raises(DataError, match="test: found no images"):
        check_entries([], "test")
    with pytest.raises(DataError, match=r"a\.xml: expected boxes of shape \(m, 4\).*\(4,\)"):
        check_entries([Entry("a", a, "cat", np.zeros(4), "a.xml")], "test")
    with pytest.raises(DataError, match=r"a\.xml: expected finite"):
        check_entries([Entry("a", a, "cat", np.array([[0.0, 0.0, np.nan, 2.0]]), "a.xml")], "test")
    # A folder symlink and '..' reach the same file too.
    os.symlink(tmp_path, tmp_path / "link")
    twice = [Entry("a", a, "cat", no_boxes(), ""), Entry("z", tmp_path / "link" / ".." / tmp_path.name / "a.jpg", "cat",
                                                          no_boxes(), "")]
    with pytest.raises(DataError, match="listed under two ids, 'a'.*'z'"):
        check_entries(twice, "test")
