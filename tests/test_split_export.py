"""``data/export/``: the split stage's sets as plain files (lists, sets.csv, PNGs of the scenes), the exact
sets and training rows of dejavu's own training, rewritten whole by each run of the split."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dejavu.artifacts import load_canaries, load_split, load_table, training_rows
from dejavu.artifacts.export import EXPORT_SETS, png_bytes
from dejavu.cli import main
from dejavu.config import load_config
from dejavu.data.examples import write_example
from dejavu.runs import Run
from dejavu.stages import STAGE_BY_NAME, run_stage
from dejavu.stages.outputs import signature
from dejavu.stages.runner import stage_done
from tests.conftest import TINY

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "examples" / "tiny.yaml"
LISTS = {f"{name}.txt" for name in EXPORT_SETS} | {"train_A.txt", "train_B.txt"}


def _split(root: Path, extra: list[str]) -> Run:
    run = Run(root, load_config(None, [*TINY, *extra]))
    run.claim()
    for stage in ("data", "split"):
        run_stage(run, stage, log=lambda _: None)
    return run


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return text.splitlines()


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _check_export(run: Run) -> dict[str, str]:
    """Every check that holds for any export; returns {id: listed path}."""
    export = run.data_dir / "export"
    table = load_table(run, with_images=False)
    sets = load_split(run, table)
    canaries, repeats = load_canaries(run, table)
    path_of: dict[str, str] = {}
    listed: dict[str, list[str]] = {}
    for name in EXPORT_SETS:
        listed[name] = _lines(export / f"{name}.txt")
        ids = sorted(sets[name].tolist())
        assert len(listed[name]) == len(ids), name
        path_of.update(zip(ids, listed[name]))
    # The lists are the split's sets, sorted by id, disjoint, and every path is absolute and names a file.
    every = [path for name in EXPORT_SETS for path in listed[name]]
    assert len(set(every)) == len(every) == sum(len(sets[name]) for name in EXPORT_SETS)
    assert all(os.path.isabs(path) and os.path.isfile(path) for path in every)
    id_of = {path: identifier for identifier, path in path_of.items()}
    for name in EXPORT_SETS:
        assert [id_of[path] for path in listed[name]] == sorted(sets[name].tolist()), name
    # train_X.txt: what dejavu's training of model X sees per epoch, canaries repeated (A only).
    for model in ("A", "B"):
        rows = training_rows(table, sets, model, canaries, repeats)
        shown = _lines(export / f"train_{model}.txt")
        assert Counter(id_of[path] for path in shown) == Counter(table.ids[rows].tolist()), model
        assert Counter(id_of[path] for path in shown) == Counter(
            [*sets[model].tolist(), *sets["shared"].tolist(), *(canaries.tolist() * (repeats - 1) if model == "A" else [])])
        assert [id_of[path] for path in shown] == sorted(id_of[path] for path in shown)
    # sets.csv: one row per image of a set, its label and class as the catalog has them.
    classes = _lines(export / "classes.txt")
    assert classes == table.class_names.tolist()
    with open(export / "sets.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "path", "label", "class", "set"]
    assert sorted((r["id"], r["set"]) for r in rows) == sorted(
        (identifier, name) for name in EXPORT_SETS for identifier in sets[name].tolist())
    position = {identifier: i for i, identifier in enumerate(table.ids.tolist())}
    for row in rows:
        label = int(table.labels[position[row["id"]]])
        assert (int(row["label"]), row["class"], row["path"]) == (label, classes[label], path_of[row["id"]])
    readme = (export / "README.txt").read_text(encoding="utf-8")
    assert "train_A.txt" in readme and "train_B.txt" in readme
    assert f"dejavu audit --out {os.path.abspath(run.root)} --target A.pth --reference B.pth" in readme
    # No temporary folder is left beside it; the split's signature covers the export, the data stage's does not.
    assert sorted(p.name for p in run.data_dir.iterdir() if p.name.startswith(".")) == []
    split_files = set(run.marker_payload("split")["files"])
    assert {f"data/export/{name}" for name in _files(export)} | {"data/split.json"} == split_files
    assert not any(name.startswith("data/export") for name in run.marker_payload("data")["files"])
    assert stage_done(run, STAGE_BY_NAME["data"]) and stage_done(run, STAGE_BY_NAME["split"])
    return path_of


def test_scenes_export_lists_the_sets_and_writes_each_image_as_a_png_of_its_cached_pixels(tmp_path):
    run = _split(tmp_path / "run", ["split.canaries=2", "split.canary_repeats=3"])
    export = run.data_dir / "export"
    path_of = _check_export(run)
    table = load_table(run)
    canaries, _ = load_canaries(run)
    assert len(canaries) == 2 and _lines(export / "shared.txt") == []  # the balanced scheme: no shared set
    train_a = _lines(export / "train_A.txt")
    assert len(train_a) == len(_lines(export / "A.txt")) + 2 * 2
    assert all(train_a.count(path_of[c]) == 3 for c in canaries.tolist())
    assert "2 canaries 3 times each" in (export / "README.txt").read_text()
    # An ImageFolder layout under export/images/, only the images of the sets, each its cached pixels exactly.
    pngs = {name for name in _files(export) if name.startswith("images/")}
    assert pngs == {f"images/{Path(p).parent.name}/{Path(p).name}" for p in path_of.values()}
    for identifier, path in path_of.items():
        row = int(np.flatnonzero(table.ids == identifier)[0])
        assert Path(path) == export / "images" / str(table.class_names[table.labels[row]]) / f"{identifier}.png"
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            assert np.array_equal(np.asarray(image), table.images[row]), identifier
    # Deterministic: another run of the same config writes byte-identical files (beside its own folder's paths).
    again = _split(tmp_path / "again", ["split.canaries=2", "split.canary_repeats=3"])
    other = again.data_dir / "export"
    assert _files(other) == _files(export)
    for name in _files(export):
        mine, theirs = (export / name).read_bytes(), (other / name).read_bytes()
        assert mine.replace(str(run.root).encode(), b"RUN") == theirs.replace(str(again.root).encode(), b"RUN"), name


def test_a_file_dataset_lists_its_original_files_and_shared_images_in_both_trainings(tmp_path, capsys):
    keys = write_example("imagenet", tmp_path / "examples")
    out = tmp_path / "run"
    assert main(["split", "--config", str(TINY_CONFIG), "--dataset", "imagenet", "--root", keys["root"],
                 "--boxes", keys["annotations"], "--out", str(out)]) == 0
    run = Run(out, load_config(out / "config.json"))  # the config the command ran (its fingerprints)
    path_of = _check_export(run)
    table = load_table(run, with_images=False)
    sets = load_split(run, table)
    assert len(sets["shared"]) > 0  # the paper's scheme: unboxed images both models train on
    for identifier, path in path_of.items():
        original = str(table.paths[int(np.flatnonzero(table.ids == identifier)[0])])
        assert path == os.path.abspath(original) and path.startswith(str(Path(keys["root"]).resolve()))
    assert not (run.data_dir / "export" / "images").exists()  # nothing copied
    shared = set(_lines(run.data_dir / "export" / "shared.txt"))
    for model in ("A", "B"):
        shown = _lines(run.data_dir / "export" / f"train_{model}.txt")
        assert shared <= set(shown) and len(shown) == len(sets[model]) + len(sets["shared"])


def test_rerunning_the_split_rewrites_the_export_whole(tmp_path):
    run = _split(tmp_path / "run", ["split.canaries=2"])
    export = run.data_dir / "export"
    before = _check_export(run)
    (export / "stale.txt").write_text("from an earlier split\n")
    (export / "images" / "stale-class").mkdir()
    (export / "images" / "stale-class" / "stale.png").write_bytes(png_bytes(np.zeros((2, 2, 3), np.uint8)))
    (run.data_dir / ".export.999999-deadbeef.tmp").mkdir()  # a killed writer's temporary folder
    # Another seed: new data and a new split (fewer images in A, no canaries) in the same folder.
    changed = Run(run.root, load_config(None, [*TINY, "seed=7", "split.a_per_class=4", "split.b_per_class=4"]))
    for stage in ("data", "split"):
        assert run_stage(changed, stage, log=lambda _: None) is not None
    after = _check_export(changed)
    assert set(after) != set(before)
    assert len(_lines(export / "A.txt")) == 4 * 10
    assert not (export / "stale.txt").exists() and not (export / "images" / "stale-class").exists()
    pngs = {name for name in _files(export) if name.startswith("images/")}
    assert len(pngs) == len(after)  # only the images of the new sets
    # Both stages stay done: the data stage's files never include the split's export.
    logged: list[str] = []
    for stage in ("data", "split"):
        assert run_stage(changed, stage, log=logged.append) is None
    assert all("up to date" in line for line in logged), logged


def test_a_failed_export_leaves_the_previous_one_and_no_temporary_folder(tmp_path, monkeypatch):
    from dejavu.artifacts import export as export_module

    run = _split(tmp_path / "run", [])
    export = run.data_dir / "export"
    before = {name: (export / name).read_bytes() for name in _files(export)}

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "_write_list", fail)
    with pytest.raises(OSError):
        export_module.write_export(run)
    assert {name: (export / name).read_bytes() for name in _files(export)} == before
    assert sorted(p.name for p in run.data_dir.iterdir()) == ["catalog.npz", "export", "images.npy", "split.json"]


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 3), (64, 64, 3)])
def test_png_bytes_decode_to_the_same_pixels(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    with Image.open(io.BytesIO(png_bytes(pixels))) as image:
        assert image.size == (shape[1], shape[0]) and np.array_equal(np.asarray(image.convert("RGB")), pixels)
    assert png_bytes(pixels) == png_bytes(pixels.copy())
    with pytest.raises(ValueError):
        png_bytes(pixels.astype(np.float32))


def test_split_declares_its_export_folder():
    assert STAGE_BY_NAME["split"].outputs == ("data/split.json", "data/export")
    assert json.dumps(signature(Path("/nonexistent"), STAGE_BY_NAME["split"])) == "{}"
