"""Bad dataset files: each ends the data stage with one line naming the file, exit code 2 and no traceback,
and the same command on the same run folder runs once the file is fixed (issue 12, items 6 and 7).

The property test draws corruptions of a valid tiny dataset in every layout (manifest CSV and JSONL, VOC and
ImageNet XML, COCO JSON, and the images they list). Every corruption is one that must be refused (a
truncation inside a value, a box outside its image, a byte that is not UTF-8...), so that exit code 2 is the
only right answer; hypothesis runs derandomized, so the examples are the same on every run.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dejavu.cli import main
from dejavu.config import DataConfig
from dejavu.data.catalog import ingest, read_entries
from dejavu.data.coco import read_coco
from dejavu.data.decode import check_header, decode_file
from dejavu.data.entries import Entry
from dejavu.data.examples import write_examples
from dejavu.data.imagenet import parse_voc_xml
from dejavu.data.manifest import read_manifest
from dejavu.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "examples" / "tiny.yaml"
LAYOUTS = ("manifest-csv", "manifest-jsonl", "voc", "imagenet", "coco")
# Two classes of four images: every reader path (boxed, unboxed, pasted objects, crowds) in 0.1 s a run.
SIZES = {"n_classes": 2, "boxed_per_class": 3, "unboxed_per_class": 1}
# Three examples per group: 15 to 21 per layout (the first is hypothesis's simplest, the others drawn).
PROPERTY = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FOLDER = object()  # a corruption that puts a folder where a file was


# ---------------------------------------------------------------------------------------------- the datasets


@functools.lru_cache(maxsize=None)
def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict:
    """Every layout written once, plus an image outside every root and symlinks that lead to it."""
    base = tmp_path_factory.mktemp("datasets")
    keys = write_examples(base / "examples", layouts=("manifest", "voc", "imagenet", "coco"), **SIZES)
    outside = base / "outside.jpg"
    Image.new("RGB", (40, 30), (90, 20, 200)).save(outside)
    manifest = Path(keys["manifest"]["annotations"])
    jsonl = manifest.with_suffix(".jsonl")
    with open(manifest, newline="") as handle:
        rows = [{key: value for key, value in row.items() if value} for row in csv.DictReader(handle)]
    jsonl.write_text("".join(json.dumps({**row, **({"boxes": json.loads(row["boxes"])} if "boxes" in row else {})})
                             + "\n" for row in rows))
    layouts = {
        "manifest-csv": keys["manifest"], "manifest-jsonl": {**keys["manifest"], "annotations": str(jsonl)},
        "voc": keys["voc"], "imagenet": keys["imagenet"], "coco": keys["coco"],
    }
    for layout in ("manifest-csv", "coco"):
        os.symlink(outside, Path(layouts[layout]["root"]) / "escape.jpg")
    return {"layouts": layouts, "outside": outside, "base": base, "runs": itertools.count()}


def _command(keys: dict, out: Path, *overrides: str) -> list[str]:
    boxes = ["--boxes", keys["annotations"]] if keys.get("annotations") else []
    return ["data", "--config", str(TINY_CONFIG), "--dataset", keys["dataset"], "--root", keys["root"], *boxes,
            "--out", str(out), *overrides]


def _one_error_line(err: str) -> str:
    """The error line of a failed command's stderr; fails unless it is the only line besides the progress bar."""
    assert "Traceback" not in err, err
    # Lines end at "\n" only: the progress bar redraws itself with "\r" within its one line.
    lines = err.rstrip("\n").split("\n")
    assert lines[-1].startswith("dejavu: error: "), err
    # The image pass's progress bar, closed before the error so that the error starts a line of its own.
    assert all("decode + cache images" in line for line in lines[:-1]), err
    assert sum(line.startswith("dejavu: error:") for line in lines) == 1, err
    return lines[-1]


def _fails_then_runs_once_fixed(datasets: dict, layout: str, target: Path, bad, capsys) -> str:
    """Write ``bad`` over ``target``, check the data stage refuses it in one line, restore, check it runs."""
    keys = datasets["layouts"][layout]
    out = datasets["base"] / "runs" / f"{layout}-{next(datasets['runs'])}"
    original = target.read_bytes()
    try:
        if bad is FOLDER:
            target.unlink()
            target.mkdir()
        else:
            target.write_bytes(bad)
        capsys.readouterr()
        code = main(_command(keys, out))
        line = _one_error_line(capsys.readouterr().err)
        assert code == 2, line
    finally:
        if target.is_dir():
            target.rmdir()
        target.write_bytes(original)
    # A failed data stage leaves no progress behind (only a kill keeps it, to resume).
    assert not list(out.glob("data/*.partial.*"))
    assert main(_command(keys, out)) == 0, capsys.readouterr().err
    return line


# ---------------------------------------------------------------------------------------------- corruptions

# Values that no reader may accept where they stand; each list is one field's.
BAD_PATHS = ["", "   ", "missing/nothere.jpg", "images", "../outside.jpg", "escape.jpg", "a\nb.jpg", "tab\t.jpg",
             "manifest.csv", "x" * 300 + ".jpg"]
BAD_LABELS = ["", "   ", "cat\ndog", "nul\x00"]
BAD_BOX_TEXTS = ["not json", "[[1, 2, 3]]", '[["a", 1, 2, 3]]', "[[NaN, 1, 2, 3]]", "[[5, 5, 1, 1]]", "[[4, 9, 8, 2]]",
                 "[[-10, -10, -5, -5]]", "[[1e400, 0, 1, 1]]", "[[true, 0, 1, 1]]", '{"x": 1}', "[1, 2, 3, 4]",
                 "[[" + "9" * 400 + ", 0, 1, 1]]", "[[1000, 1000, 2000, 2000]]", "5", "[" * 5000]
JSON_WRONG_TYPES = [5, None, [], {}, True, 1.5]
BAD_BOX_VALUES = [[[1, 2, 3]], [["a", 1, 2, 3]], [[math.nan, 0, 1, 1]], [[5, 5, 1, 1]], [[-10, -10, -5, -5]],
                  {"x": 1}, 5, True, [[True, 0, 1, 1]], [[10 ** 400, 0, 1, 1]], [[math.inf, 0, 1, 1]], [1, 2, 3, 4]]


def _not_utf8(draw, raw: bytes) -> bytes:
    """One byte >= 0x80 inserted anywhere: never valid in these ASCII files."""
    position = draw(st.integers(0, len(raw)))
    return raw[:position] + bytes([draw(st.integers(0x80, 0xFF))]) + raw[position:]


def _csv_text(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def corrupt_csv(draw, raw: bytes, pick: str) -> bytes:
    rows = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    header, body = rows[0], rows[1:]
    row = draw(st.integers(0, len(body) - 1))
    if pick == "path":
        body[row][0] = draw(st.sampled_from(BAD_PATHS))
    elif pick == "label":
        body[row][1] = draw(st.sampled_from(BAD_LABELS))
    elif pick == "boxes":
        body[row][2] = draw(st.sampled_from(BAD_BOX_TEXTS) | st.text(max_size=20).map(lambda text: "x" + text))
    elif pick == "duplicate id":
        other = draw(st.integers(0, len(body) - 1).filter(lambda other: other != row))
        header = header + ["id"]
        body = [cells + [f"r{index}"] for index, cells in enumerate(body)]
        body[row][3] = body[other][3]
    elif pick == "extra cells":
        body[row] = body[row] + ["x"] * draw(st.integers(1, 3))
    elif pick == "fewer cells":
        body[row] = body[row][:1]
    elif pick == "repeated row":
        body.append(list(body[row]))
    elif pick == "header":
        column = draw(st.sampled_from([0, 1]))
        header[column] = draw(st.text(max_size=12).filter(lambda text, name=header[column]: text.strip() != name))
    elif pick == "header cut":
        return raw[: draw(st.integers(0, len("path,label") - 1))]
    elif pick == "nul":
        # Anywhere in the rows: a NUL lands in a path, a label or a boxes cell, and each refuses it.
        start = raw.index(b"\n") + 1
        position = draw(st.integers(start, len(raw)))
        return raw[:position] + b"\x00" + raw[position:]
    elif pick == "utf-16":
        return raw.decode().encode("utf-16")
    elif pick == "not utf-8":
        return _not_utf8(draw, raw)
    elif pick == "empty":
        return b""
    return _csv_text([header, *body])


def corrupt_jsonl(draw, raw: bytes, pick: str) -> bytes:
    lines = raw.decode().splitlines()
    row_index = draw(st.integers(0, len(lines) - 1))
    row = json.loads(lines[row_index])
    if pick in ("path", "label"):
        # An integer label is a class index, kept as its digits: valid, so not among the wrong types here.
        wrong = JSON_WRONG_TYPES if pick == "path" else [value for value in JSON_WRONG_TYPES if value != 5]
        row[pick] = draw(st.sampled_from(wrong + (BAD_PATHS if pick == "path" else BAD_LABELS)))
    elif pick == "boxes":
        row["boxes"] = draw(st.sampled_from(BAD_BOX_VALUES + BAD_BOX_TEXTS))
    elif pick == "id":
        row["id"] = draw(st.sampled_from([1.5, [], {}, True, "a\tb"]))
    elif pick == "missing key":
        del row[draw(st.sampled_from(["path", "label"]))]
    elif pick == "not an object":
        lines[row_index] = draw(st.sampled_from(["[1, 2]", '"text"', "5", "null", "[" * 100_000]))
        return ("\n".join(lines) + "\n").encode()
    elif pick == "cut line":
        lines[row_index] = lines[row_index][: draw(st.integers(1, len(lines[row_index]) - 1))]
        return ("\n".join(lines) + "\n").encode()
    elif pick == "repeated row":
        lines.append(lines[row_index])
        return ("\n".join(lines) + "\n").encode()
    elif pick == "not utf-8":
        return _not_utf8(draw, raw)
    elif pick == "empty":
        return b""
    lines[row_index] = json.dumps(row)
    return ("\n".join(lines) + "\n").encode()


def corrupt_xml(draw, raw: bytes, pick: str) -> bytes:
    tree = ElementTree.ElementTree(ElementTree.fromstring(raw))
    objects = tree.getroot().findall("object")
    element = objects[draw(st.integers(0, len(objects) - 1))]
    box = element.find("bndbox")
    if pick == "coordinate":
        tag = draw(st.sampled_from(["xmin", "ymin", "xmax", "ymax"]))
        box.find(tag).text = draw(st.sampled_from(["nan", "inf", "-inf", "", "1e999", "twelve"])
                                  | st.text(max_size=10).filter(_not_a_finite_number))
    elif pick == "missing coordinate":
        box.remove(box.find(draw(st.sampled_from(["xmin", "ymin", "xmax", "ymax"]))))
    elif pick == "renamed tag":
        tag = draw(st.sampled_from(["name", "bndbox", "xmin", "ymax"]))
        (element if tag in ("name", "bndbox") else box).find(tag).tag = tag + "_"
    elif pick == "no object":
        for each in objects:
            each.tag = "thing"
    elif pick == "name":
        element.find("name").text = draw(st.sampled_from(["", "  ", "cat\ndog"]))
    elif pick == "inverted":
        axis = draw(st.sampled_from(["x", "y"]))
        box.find(f"{axis}min").text = str(int(box.find(f"{axis}max").text) + draw(st.integers(1, 50)))
    elif pick == "outside":
        shift = draw(st.sampled_from([10_000, -10_000]))
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            box.find(tag).text = str(int(box.find(tag).text) + shift)
    elif pick == "cut":
        return raw[: draw(st.integers(0, len(raw.rstrip()) - 1))]
    elif pick == "entities":
        return b'<!DOCTYPE a [<!ENTITY e "x">]>' + raw
    elif pick == "unknown encoding":
        return b'<?xml version="1.0" encoding="klingon"?>' + raw
    elif pick == "not utf-8":
        return _not_utf8(draw, raw)
    elif pick == "empty":
        return b""
    return ElementTree.tostring(tree.getroot(), encoding="utf-8")


def _not_a_finite_number(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return True


def corrupt_coco(draw, raw: bytes, pick: str, outside: Path) -> bytes:
    data = json.loads(raw)
    image = draw(st.sampled_from(data["images"]))
    annotation = draw(st.sampled_from(data["annotations"]))
    category = draw(st.sampled_from(data["categories"]))
    if pick == "top level":
        data = draw(st.sampled_from([[], "x", 5, None]))
    elif pick == "top key":
        key = draw(st.sampled_from(["images", "annotations", "categories"]))
        if draw(st.booleans()):
            del data[key]
        else:
            data[key] = draw(st.sampled_from([{}, "x", 5, None]))
    elif pick == "file_name":
        image["file_name"] = draw(st.sampled_from([5, None, "", "   ", [], "../outside.jpg", str(outside),
                                                   "escape.jpg", "missing.jpg", "a\nb.jpg"]))
    elif pick == "image id":
        others = [other["id"] for other in data["images"] if other is not image]
        image["id"] = draw(st.sampled_from([1.5, None, [], True, *others]))
    elif pick == "missing field":
        item, key = draw(st.sampled_from([(image, "id"), (image, "file_name"), (annotation, "image_id"),
                                          (annotation, "category_id"), (annotation, "bbox"), (category, "id"),
                                          (category, "name")]))
        del item[key]
    elif pick == "reference":
        key = draw(st.sampled_from(["image_id", "category_id"]))
        annotation[key] = draw(st.sampled_from([10 ** 9, "x", 1.5, None, []]))
    elif pick == "bbox":
        annotation["bbox"] = draw(st.sampled_from(
            ["str", [1, 2, 3], [1, 2, "3", 4], [math.nan, 0, 1, 1], [0, 0, -5, 5], [0, 0, 0, 5], [math.inf, 0, 1, 1],
             [True, 0, 1, 1], None, {}, [10 ** 400, 0, 1, 1], [5000, 5000, 10, 10], [-500, -500, 10, 10]]))
    elif pick == "iscrowd":
        annotation["iscrowd"] = draw(st.sampled_from(["yes", 2, -1, 0.5, [], None]))
    elif pick == "not an object":
        key = draw(st.sampled_from(["images", "annotations", "categories"]))
        data[key][0] = draw(st.sampled_from([5, "x", [], None]))
    elif pick == "category":
        field, value = draw(st.sampled_from([("name", None), ("name", ""), ("name", []), ("name", "a\nb"),
                                             ("id", 1.5), ("id", None), ("id", True)]))
        category[field] = value
    elif pick == "repeated category":
        data["categories"].append(dict(category))
    elif pick == "cut":
        return raw[: draw(st.integers(0, len(raw.rstrip()) - 1))]
    elif pick == "nested":
        return b"[" * 100_000
    elif pick == "not utf-8":
        return _not_utf8(draw, raw)
    elif pick == "empty":
        return b""
    return json.dumps(data).encode()


def corrupt_image(draw, raw: bytes, pick: str):
    if pick == "cut image":
        return raw[: draw(st.integers(0, len(raw) // 2))]
    if pick == "garbage":
        # The text first: no image format's signature starts with it (a NUL could start a TGA or an ICO).
        return b"not an image" + draw(st.binary(max_size=64))
    if pick == "tiny image":
        return _png(1, 1)
    if pick == "huge image":
        # 7100 x 7100 = 50.4 M pixels, just above data.max_pixels' default, in 6 KB.
        return _png(7100, 7100, "1")
    return FOLDER


IMAGE_VARIANTS = ["cut image", "garbage", "tiny image", "huge image"]
# Per layout, groups of corruptions: the property test runs each group (layout x group) on a few examples,
# drawing one variant of it each time, so that every group is exercised whatever hypothesis draws.
GROUPS = {
    "manifest-csv": {"path": ["path"], "label": ["label"], "boxes": ["boxes"],
                     "columns": ["extra cells", "fewer cells", "header", "header cut"],
                     "ids": ["duplicate id", "repeated row"], "bytes": ["nul", "utf-16", "not utf-8", "empty"],
                     "image": IMAGE_VARIANTS + ["folder"]},
    "manifest-jsonl": {"path": ["path"], "label": ["label"], "boxes": ["boxes"], "ids": ["id", "repeated row"],
                       "structure": ["missing key", "not an object", "cut line"], "bytes": ["not utf-8", "empty"],
                       "image": IMAGE_VARIANTS},
    "voc": {"coordinates": ["coordinate", "missing coordinate"], "geometry": ["inverted", "outside"],
            "tags": ["renamed tag", "no object", "name"], "document": ["cut", "entities", "unknown encoding"],
            "bytes": ["not utf-8", "empty"], "image": IMAGE_VARIANTS},
    "coco": {"structure": ["top level", "top key", "not an object", "nested"],
             "images": ["file_name", "image id", "missing field"], "annotations": ["reference", "bbox", "iscrowd"],
             "categories": ["category", "repeated category"], "bytes": ["cut", "not utf-8", "empty"],
             "image": IMAGE_VARIANTS + ["folder"]},
}
GROUPS["imagenet"] = GROUPS["voc"]
CASES = [(layout, group) for layout in LAYOUTS for group in GROUPS[layout]]


def _targets(keys: dict, layout: str) -> tuple[list[Path], list[Path]]:
    """The annotation files a corruption may hit, and the image files (all of them listed by the dataset)."""
    if layout.startswith("manifest"):
        annotations = [Path(keys["annotations"])]
        images = sorted((Path(keys["root"]) / "images").rglob("*.jpg"))
    elif layout == "coco":
        annotations = [Path(keys["annotations"])]
        images = sorted(Path(keys["root"]).glob("ex_*.jpg"))
    elif layout == "voc":
        annotations = sorted((Path(keys["root"]) / "Annotations").glob("*.xml"))
        images = sorted((Path(keys["root"]) / "JPEGImages").glob("*.jpg"))
    else:
        annotations = sorted((Path(keys["root"]).parent / "Annotation").rglob("*.xml"))
        images = sorted(Path(keys["root"]).rglob("*.JPEG"))
    return annotations, images


@pytest.mark.parametrize("layout, group", CASES, ids=[f"{layout}-{group}" for layout, group in CASES])
@PROPERTY
@given(data=st.data())
def test_a_bad_dataset_file_is_one_line_exit_2_and_the_folder_runs_once_fixed(datasets, layout, group, data, capsys):
    keys = datasets["layouts"][layout]
    annotations, images = _targets(keys, layout)
    pick = data.draw(st.sampled_from(GROUPS[layout][group]), label="corruption")
    if group == "image":
        target = data.draw(st.sampled_from(images), label="image")
        bad = corrupt_image(data.draw, target.read_bytes(), pick)
    else:
        target = data.draw(st.sampled_from(annotations), label="file")
        raw = target.read_bytes()
        if layout == "manifest-csv":
            bad = corrupt_csv(data.draw, raw, pick)
        elif layout == "manifest-jsonl":
            bad = corrupt_jsonl(data.draw, raw, pick)
        elif layout == "coco":
            bad = corrupt_coco(data.draw, raw, pick, datasets["outside"])
        else:
            bad = corrupt_xml(data.draw, raw, pick)
    line = _fails_then_runs_once_fixed(datasets, layout, target, bad, capsys)
    # The message names the broken file (or, for a box outside its image, the annotation that holds it).
    assert target.name in line or target.parent.name in line, line


# ---------------------------------------------------------------------------------------------- direct tests


def _image(path: Path, width: int = 40, height: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (120, 60, 30)).save(path)
    return path


def _manifest_dataset(folder: Path, rows: str, count: int = 4) -> Path:
    """``count`` 40 x 30 images ``img<i>.jpg`` and a CSV manifest holding the rows given."""
    for index in range(count):
        _image(folder / f"img{index}.jpg")
    (folder / "m.csv").write_text(rows)
    return folder / "m.csv"


def test_paths_outside_the_root_are_refused_unless_allowed(tmp_path):
    root = tmp_path / "root"
    outside = _image(tmp_path / "elsewhere" / "secret.jpg")
    _image(root / "a.jpg")
    (root / "sub").mkdir()
    os.symlink(outside, root / "link.jpg")
    os.symlink(tmp_path / "elsewhere", root / "folder-link")
    for given_path in ("../elsewhere/secret.jpg", str(outside), "link.jpg", "folder-link/secret.jpg",
                       "sub/../../elsewhere/secret.jpg"):
        (root / "m.csv").write_text(f"path,label\na.jpg,cat\n{given_path},dog\n")
        with pytest.raises(DataError) as caught:
            read_manifest(root / "m.csv")
        message = str(caught.value)
        assert f"m.csv:3: image path {given_path!r} resolves to {outside}, outside the dataset root" in message
        assert "data.allow_outside_root=true" in message
        assert len(read_manifest(root / "m.csv", allow_outside_root=True)) == 2
    # COCO: the same for file_name.
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "../elsewhere/secret.jpg"}]
    annotations = [{"id": n, "image_id": n, "category_id": 1, "bbox": [1, 1, 5, 5]} for n in (1, 2)]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": [{"id": 1, "name": "cat"}]}))
    with pytest.raises(DataError, match=r"image id 2: image path '\.\./elsewhere/secret\.jpg' resolves to .*outside"):
        read_coco(root, root / "instances.json")
    assert len(read_coco(root, root / "instances.json", allow_outside_root=True)) == 2


def test_the_cli_refuses_an_outside_path_and_accepts_it_with_the_key(tmp_path, capsys):
    manifest = _manifest_dataset(tmp_path / "data", "")
    _image(tmp_path / "outside.jpg")
    rows = "".join(f"img{index}.jpg,c{index % 2}\n" for index in range(4))
    manifest.write_text("path,label\n" + rows + "../outside.jpg,c0\n")
    command = ["data", "--config", str(TINY_CONFIG), "--dataset", "manifest", "--root", str(manifest)]
    assert main([*command, "--out", str(tmp_path / "refused")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "m.csv:6: image path '../outside.jpg'" in line and "data.allow_outside_root=true" in line
    assert main([*command, "--out", str(tmp_path / "allowed"), "data.allow_outside_root=true"]) == 0


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_manifest_with_a_utf8_byte_order_mark_is_read(tmp_path, suffix):
    _image(tmp_path / "a.jpg")
    text = "path,label\na.jpg,cat\n" if suffix == ".csv" else '{"path": "a.jpg", "label": "cat"}\n'
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    (entry,) = read_manifest(path)
    assert (entry.id, entry.label) == ("a", "cat")


@pytest.mark.parametrize("raw, message", [
    ("path,label\na.jpg,cat\n".encode("utf-16"), r"m\.csv: the manifest is UTF-16 text .*re-save it as UTF-8"),
    (b"path,label\na.jpg,caf\xe9\n", r"m\.csv:2: byte b'\\xe9' at offset 20 is not UTF-8 .*re-save the manifest"),
    (b"", r"m\.csv:1: the header has no column path, label \(found: nothing\)"),
    (b"path,label\n", r"m\.csv.*found no images"),
    (b"path,label,boxes\na.jpg,cat,[[1, 2, 30, 20]]\n", r"m\.csv:2: found 6 cells; expected 3.*must be quoted"),
    (b"path,label,path\na.jpg,cat,a.jpg\n", r"m\.csv:1: the header names column path twice"),
    (b"path,label\n\"a.jpg\nb\",cat\n", r"m\.csv:3: path 'a\.jpg\\nb' holds a control character"),
    (b"path,label,boxes\na.jpg,cat,\"[[1e400, 0, 5, 5]]\"\n", r"m\.csv:2: boxes .*expected finite pixel coordinates"),
])
def test_manifest_encoding_and_shape_errors_are_one_line_naming_file_and_line(tmp_path, raw, message):
    _image(tmp_path / "a.jpg")
    (tmp_path / "m.csv").write_bytes(raw)
    with pytest.raises(DataError, match=message) as caught:
        read_manifest(tmp_path / "m.csv")
    assert "\n" not in str(caught.value)


def test_unreadable_files_and_folders_in_place_of_files_are_data_errors(tmp_path, monkeypatch):
    _image(tmp_path / "a.jpg")
    (tmp_path / "m.csv").mkdir()
    with pytest.raises(DataError, match=r"m\.csv'?: the manifest file is a folder"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "c.json").mkdir()
    with pytest.raises(DataError, match=r"c\.json: the COCO annotation file is a folder"):
        read_coco(tmp_path, tmp_path / "c.json")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(DataError, match=r"folder\.jpg' is a folder; expected a readable image file"):
        decode_file(tmp_path / "folder.jpg", 16)
    # The tests run as root, whom chmod cannot lock out: the file system's refusal is simulated.
    (tmp_path / "ok.csv").write_text("path,label\na.jpg,cat\n")

    def refused(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refused)
    with pytest.raises(DataError, match=r"ok\.csv: cannot read the manifest \(Permission denied\)"):
        read_manifest(tmp_path / "ok.csv")
    with pytest.raises(DataError, match=r"a\.jpg' cannot be read \(Permission denied\)"):
        decode_file(tmp_path / "a.jpg", 16)


def test_xml_in_an_unknown_encoding_and_coco_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text('<?xml version="1.0" encoding="klingon"?><annotation/>')
    with pytest.raises(DataError, match=r"a\.xml: not readable XML \(unknown encoding: klingon\)"):
        parse_voc_xml(path)
    _image(tmp_path / "images" / "a.jpg")
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]}
    (tmp_path / "c.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(coco).encode())
    assert [entry.label for entry in read_coco(tmp_path / "images", tmp_path / "c.json")] == ["cat"]


def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 M pixels in 12 KB
    assert path.stat().st_size < 100_000
    default = DataConfig().max_pixels

    def no_decoding(self):
        raise AssertionError("the pixels were decoded")

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "load", no_decoding)
        patch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
        with pytest.raises(DataError) as caught:
            decode_file(path, 32, max_pixels=default, min_side=16)
    message = str(caught.value)
    assert "huge.png' is 10000x10000 = 100,000,000 pixels, more than data.max_pixels = 50,000,000" in message
    assert "raise data.max_pixels to at least 100000000" in message
    # Allowed by a raised limit, it decodes with neither PIL's DecompressionBombWarning nor its error
    # (100 M pixels is above PIL's own 89 M), and PIL's limit is left as it was.
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = decode_file(path, 32, max_pixels=100_000_000, min_side=16)
    assert decoded.pixels.shape == (32, 32, 3) and (decoded.width, decoded.height) == (10_000, 10_000)
    assert Image.MAX_IMAGE_PIXELS == before


def test_the_pixel_limit_speaks_through_the_cli_naming_the_file_and_key(tmp_path, capsys):
    manifest = _manifest_dataset(tmp_path / "data", "path,label\n" + "".join(
        f"img{index}.jpg,c{index % 2}\n" for index in range(4)))
    command = ["data", "--config", str(TINY_CONFIG), "--dataset", "manifest", "--root", str(manifest)]
    assert main([*command, "--out", str(tmp_path / "run"), "data.max_pixels=1000"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "img0.jpg' is 40x30 = 1,200 pixels, more than data.max_pixels = 1,000" in line
    assert not list((tmp_path / "run" / "data").glob("*.partial.*"))


def test_jpegs_still_decode_at_reduced_size(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1024, 768), (10, 200, 30)).save(path)
    from PIL import JpegImagePlugin

    asked = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        asked.append((mode, size))
        return draft(self, mode, size)

    monkeypatch.setattr("PIL.JpegImagePlugin.JpegImageFile.draft", spy)
    decoded = decode_file(path, 32)
    assert asked == [("RGB", (32, 32))] and decoded.pixels.shape == (32, 32, 3)


def test_a_big_png_is_shrunk_after_decoding_like_a_drafted_jpeg(tmp_path):
    """Large non-JPEG files are box-averaged to at least the size needed, so the hash and the cache never
    hold float copies of the full image; the result stays close to a direct resize."""
    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), np.ones((40, 40, 1), dtype=np.uint8))
    Image.fromarray(pixels).save(tmp_path / "big.png")
    decoded = decode_file(tmp_path / "big.png", 32)
    direct = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.BILINEAR), dtype=np.int16)
    assert decoded.pixels.shape == (32, 32, 3) and np.abs(decoded.pixels - direct).mean() < 8


def test_a_one_pixel_image_is_refused_naming_the_file_size_and_key(tmp_path, capsys):
    manifest = _manifest_dataset(tmp_path / "data", "path,label\n" + "".join(
        f"img{index}.jpg,c{index % 2}\n" for index in range(4)) + "dot.png,c0\n")
    (tmp_path / "data" / "dot.png").write_bytes(_png(1, 1))
    command = ["data", "--config", str(TINY_CONFIG), "--dataset", "manifest", "--root", str(manifest)]
    assert main([*command, "--out", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "dot.png' is 1x1 pixels, its shorter side below data.min_image_side = 16" in line
    assert "lower data.min_image_side to 1" in line
    assert main([*command, "--out", str(tmp_path / "lowered"), "data.min_image_side=1"]) == 0
    with pytest.raises(DataError, match="is 15x400 pixels"):
        check_header(Path("thin.png"), (15, 400), max_pixels=None, min_side=16)


def test_a_corrupt_image_is_named_in_plain_words_and_leaves_no_partial_files(tmp_path, capsys):
    manifest = _manifest_dataset(tmp_path / "data", "path,label\n" + "".join(
        f"img{index}.jpg,c{index % 2}\n" for index in range(4)))
    good = (tmp_path / "data" / "img2.jpg").read_bytes()
    command = ["data", "--config", str(TINY_CONFIG), "--dataset", "manifest", "--root", str(manifest),
               "--out", str(tmp_path / "run")]
    for bad, words in ((b"", "the file is empty (0 bytes)"),
                       (b"GIF89a-not-really", "its bytes are not an image format"),
                       (good[: len(good) // 2], "the file is truncated")):
        (tmp_path / "data" / "img2.jpg").write_bytes(bad)
        assert main(command) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"image '{tmp_path / 'data' / 'img2.jpg'}' cannot be decoded: {words}" in line
        assert "BytesIO" not in line and "0x" not in line
        assert sorted(path.name for path in (tmp_path / "run" / "data").iterdir()) == []
    (tmp_path / "data" / "img2.jpg").write_bytes(good)
    assert main(command) == 0


_KILLED_INGEST = """
import os, signal, sys
from pathlib import Path
import numpy as np
from PIL import Image
import dejavu.data.catalog as catalog
from dejavu.config import DataConfig
from dejavu.data.decode import DecodedImages
from dejavu.data.entries import Entry

folder = Path(sys.argv[1])
entries = [Entry(f"img_{i:03d}", folder / f"img_{i:03d}.jpg", f"c{i % 2}", np.zeros((0, 4)), "") for i in range(40)]
decode = DecodedImages.__getitem__

def killed(self, index):
    if index == 35:  # after the first batch of 32 was saved: a real SIGKILL, no cleanup can run
        os.kill(os.getpid(), signal.SIGKILL)
    return decode(self, index)

DecodedImages.__getitem__ = killed
catalog.CHUNK = 4
data = DataConfig(dataset="imagenet", root="unused", image_size=32, workers=0)
catalog.ingest(entries, data, folder / "data", log=lambda _: None)
"""


def test_a_killed_image_pass_keeps_its_progress_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(40):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / f"img_{index:03d}.jpg")
    process = subprocess.run([sys.executable, "-c", _KILLED_INGEST, str(tmp_path)], capture_output=True, text=True,
                             cwd=ROOT, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert int(np.load(tmp_path / "data" / "ingest.partial.npz")["done"]) == 32
    entries = [Entry(f"img_{i:03d}", tmp_path / f"img_{i:03d}.jpg", f"c{i % 2}", np.zeros((0, 4)), "")
               for i in range(40)]
    data = DataConfig(dataset="imagenet", root="unused", image_size=32, workers=0)
    messages = []
    resumed = ingest(entries, data, tmp_path / "data", log=messages.append)
    assert any("resuming the image pass at 32/40" in message for message in messages)
    fresh = ingest(entries, data, tmp_path / "fresh", log=lambda _: None)
    assert np.array_equal(resumed.images, fresh.images)
    assert np.array_equal(resumed.content_hashes, fresh.content_hashes)


def test_damaged_progress_files_start_the_pass_over(tmp_path):
    for index in range(3):
        _image(tmp_path / f"img{index}.jpg")
    entries = [Entry(f"img{i}", tmp_path / f"img{i}.jpg", "c", np.zeros((0, 4)), "") for i in range(3)]
    data = DataConfig(dataset="imagenet", root="unused", image_size=32, workers=0)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ingest.partial.npz").write_bytes(b"not a zip")
    (tmp_path / "data" / "images.partial.npy").write_bytes(b"nor an array")
    messages = []
    table = ingest(entries, data, tmp_path / "data", log=messages.append)
    assert len(table) == 3 and any("ignoring the unreadable progress file" in m for m in messages)


def test_data_classes_that_label_no_image_are_refused(tmp_path):
    manifest = _manifest_dataset(tmp_path, "path,label\nimg0.jpg,cat\nimg1.jpg,dog\n", count=2)
    data = DataConfig(dataset="manifest", root=str(manifest), classes=["cat", "horse"])
    with pytest.raises(DataError, match=r"data\.classes 'horse' label no image; expected some of cat"):
        read_entries(data)


def test_ids_and_labels_with_control_characters_are_refused(tmp_path):
    from dejavu.data.entries import check_entries, no_boxes

    image = _image(tmp_path / "a.jpg")
    with pytest.raises(DataError, match=r"the label 'c\\na', which holds a control character"):
        check_entries([Entry("a", image, "c\na", no_boxes(), "a.xml")], "test")
