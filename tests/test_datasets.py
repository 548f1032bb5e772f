"""Real-dataset path end to end: files -> catalog + cache -> the paper's partition -> leakage checks ->
crops at full resolution -> the whole run, on tiny layouts the tests write themselves."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dejavu.cli import main
from dejavu.config import DataConfig, load_config
from dejavu.data.catalog import ingest, load_catalog, read_entries
from dejavu.data.crops import boxes_to_pixels
from dejavu.data.decode import CropImages, decode_file, open_rgb
from dejavu.data.entries import Entry
from dejavu.data.examples import LAYOUTS, write_example
from dejavu.data.sources import ArraySource, FileSource
from dejavu.data.splits import paper_partition
from dejavu.errors import DataError
from dejavu.artifacts import load_crops, load_table
from dejavu.report.gallery import read_samples
from tests.conftest import FINISHED

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "examples" / "tiny.yaml"


def shorthands(keys: dict) -> list[str]:
    flags = ["--dataset", keys["dataset"], "--root", keys["root"]]
    return flags + (["--boxes", keys["annotations"]] if keys.get("annotations") else [])


def quiet_data(**changes) -> DataConfig:
    return DataConfig(**{"dataset": "imagenet", "root": "unused", "image_size": 32, "workers": 0, **changes})


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("examples")
    return {layout: write_example(layout, out / layout) for layout in LAYOUTS}


# The whole run on every layout -------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_run_completes_on_each_layout_and_reports_partition_and_leakage(examples, tmp_path, layout, capsys):
    out = tmp_path / "run"
    assert main(["run", "--config", str(TINY_CONFIG), *shorthands(examples[layout]), "--out", str(out)]) in FINISHED
    metrics = json.loads((out / "metrics.json").read_text())
    split = json.loads((out / "data" / "split.json").read_text())
    assert split["scheme"] == "paper" and split["leakage"]["ok"] is True
    assert metrics["split_sizes"] == split["sizes"] and metrics["n_attacked"] > 0
    page = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert "the paper's partition" in page and "Leakage checks" in page
    assert "exact duplicates across sets" in page and "Sample crops" in page
    for name, size in split["sizes"].items():
        assert f"<td>{name}</td>" in page and f"<td>{size}</td>" in page
    # Attacked crops never come from the shared set, and every one excludes every box of its image.
    table = load_table_of(out)
    crops = load_crops_of(out)
    assert set(crops["set"]) <= {"A", "B", "T"}
    kept = crops["kept"] == 1
    for row in np.flatnonzero(kept):
        position = int(np.flatnonzero(table.ids == crops["id"][row])[0])
        width, height = table.sizes[position]
        assert (crops["width"][row], crops["height"][row]) == (width, height)
        x0, y0, x1, y1 = (crops[f"square_{k}"][row] for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        for bx0, by0, bx1, by1 in boxes_to_pixels(table.boxes_of(position), width, height).tolist():
            assert not (x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1)


def load_table_of(out: Path):
    from dejavu.runs import Run

    return load_table(Run(out, load_config(None)), with_images=False)


def load_crops_of(out: Path):
    from dejavu.runs import Run

    return load_crops(Run(out, load_config(None)))


def test_cache_off_decodes_files_each_time_and_gives_the_same_numbers(examples, tmp_path):
    keys = shorthands(examples["imagenet"])
    cached, streamed = tmp_path / "cached", tmp_path / "streamed"
    assert main(["run", "--config", str(TINY_CONFIG), *keys, "--out", str(cached)]) in FINISHED
    assert main(["run", "--config", str(TINY_CONFIG), *keys, "data.cache=false", "--out", str(streamed)]) in FINISHED
    assert (cached / "data" / "images.npy").is_file() and not (streamed / "data" / "images.npy").exists()
    assert read_samples(cached / "samples.csv") == read_samples(streamed / "samples.csv")


def test_split_command_with_shorthands_runs_data_and_split_only(examples, tmp_path, capsys):
    keys = examples["imagenet"]
    out = tmp_path / "run"
    assert main(["split", "--dataset", "imagenet", "--root", keys["root"], "--per-class", "6",
                 "split.t_per_class=2", "split.drop_duplicates=true", "attack.k=5", "--out", str(out)]) == 0
    split = json.loads((out / "data" / "split.json").read_text())
    assert split["per_class"]["N"] == 6 and split["sizes"]["A"] == 18
    assert not (out / "models").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["root"] == str(Path(keys["root"]).resolve())
    # How many processes decode does not change results: the folder accepts another data.workers.
    assert main(["split", "--dataset", "imagenet", "--root", keys["root"], "--per-class", "6",
                 "split.t_per_class=2", "split.drop_duplicates=true", "attack.k=5", "data.workers=1",
                 "--out", str(out)]) == 0
    assert "[data] up to date, skipped" in capsys.readouterr().out


def test_bad_manifest_is_one_clear_line_and_exit_2(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\na.jpg,cat\n")
    assert main(["run", "--config", str(TINY_CONFIG), "--dataset", "manifest", "--root", str(manifest),
                 "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "m.csv" in error and "path" in error and "Traceback" not in error


def test_examples_command_prints_runnable_commands(tmp_path, capsys):
    assert main(["examples", str(tmp_path / "ex")]) == 0
    printed = capsys.readouterr().out
    for layout in LAYOUTS:
        assert f"--dataset {layout}" in printed
    assert (tmp_path / "ex" / "coco" / "annotations" / "instances.json").is_file()


# The paper's partition -----------------------------------------------------------------------------
def synthetic(counts: dict[str, tuple[int, int]]):
    """ids, labels, boxed, names for classes with (boxed, unboxed) counts."""
    ids, labels, boxed = [], [], []
    names = sorted(counts)
    for label, name in enumerate(names):
        n_boxed, n_unboxed = counts[name]
        for i in range(n_boxed + n_unboxed):
            ids.append(f"{name}_{i:04d}")
            labels.append(label)
            boxed.append(i < n_boxed)
    return np.array(ids), np.array(labels), np.array(boxed), np.array(names)


def per_class(sets, ids, labels, name):
    label_of = dict(zip(ids.tolist(), labels.tolist()))
    return np.bincount([label_of[i] for i in sets[name].tolist()], minlength=labels.max() + 1).tolist()


def test_paper_partition_counts_follow_the_rules():
    # Class a: plenty of boxed images. b: boxed images run short, unboxed ones are shared.
    # c: no unboxed image at all. T first reserves 2 boxed images per class.
    ids, labels, boxed, names = synthetic({"a": (30, 5), "b": (12, 20), "c": (23, 0)})
    sets = paper_partition(ids, labels, boxed, names, per_class=8, public_from_per_class=10, x_cap=100,
                           t_per_class=2, seed=0)
    # a: 28 boxed left -> pools of 14 -> A = B = 8, nothing shared; X = what N = 10 leaves: 4 + 4 boxed + 5 unboxed.
    # b: 10 boxed left -> pools of 5 -> A = B = 5 plus 3 shared; N = 10 would share 5, so X = 20 - 5 = 15.
    # c: 21 boxed left -> pools of 10 -> A = B = 8; N = 10 uses both pools whole, X = the odd one out.
    assert per_class(sets, ids, labels, "T") == [2, 2, 2]
    assert per_class(sets, ids, labels, "A") == [8, 5, 8]
    assert per_class(sets, ids, labels, "B") == [8, 5, 8]
    assert per_class(sets, ids, labels, "shared") == [0, 3, 0]
    assert per_class(sets, ids, labels, "X") == [13, 15, 1]
    boxed_of = dict(zip(ids.tolist(), boxed.tolist()))
    assert all(boxed_of[i] for name in ("A", "B", "T") for i in sets[name].tolist())
    assert not any(boxed_of[i] for i in sets["shared"].tolist())
    every = np.concatenate(list(sets.values()))
    assert len(every) == len(set(every.tolist()))


def test_paper_partition_nests_across_n_and_keeps_one_public_set():
    ids, labels, boxed, names = synthetic({"a": (40, 30), "b": (16, 40), "c": (25, 25)})
    small = paper_partition(ids, labels, boxed, names, 4, 12, 1000, 2, seed=3)
    large = paper_partition(ids, labels, boxed, names, 12, 12, 1000, 2, seed=3)
    for name in ("A", "B", "shared"):
        assert set(small[name].tolist()) <= set(large[name].tolist())
    assert np.array_equal(small["X"], large["X"]) and np.array_equal(small["T"], large["T"])
    # The draw depends on ids, not on the order the dataset was read in.
    order = np.random.default_rng(1).permutation(len(ids))
    shuffled = paper_partition(ids[order], labels[order], boxed[order], names, 4, 12, 1000, 2, seed=3)
    assert all(np.array_equal(shuffled[k], small[k]) for k in small)
    other = paper_partition(ids, labels, boxed, names, 4, 12, 1000, 2, seed=4)
    assert not np.array_equal(other["A"], small["A"])


def test_paper_partition_caps_x_and_refuses_classes_that_are_too_small():
    ids, labels, boxed, names = synthetic({"a": (20, 30), "b": (20, 30)})
    sets = paper_partition(ids, labels, boxed, names, 5, 5, 7, 2, seed=0)
    assert per_class(sets, ids, labels, "X") == [7, 7]
    ids, labels, boxed, names = synthetic({"a": (20, 30), "tiny": (6, 1)})
    with pytest.raises(DataError, match="class 'tiny' has 6 boxed and 1 unboxed"):
        paper_partition(ids, labels, boxed, names, 5, 5, 7, 2, seed=0)


def test_paper_partition_on_an_imagenet_fixture_matches_the_rules(examples, tmp_path):
    data = quiet_data(root=examples["imagenet"]["root"])
    table = ingest(read_entries(data), data, tmp_path, log=lambda _: None)
    sets = paper_partition(table.ids, table.labels, table.boxed, table.class_names, 12, 0, 100, 2, seed=0)
    # 24 boxed + 8 unboxed per class: T takes 2 boxed, pools of 11, A = B = 11, shared 1 per class,
    # X = 0 leftover boxed + 7 unboxed.
    assert per_class(sets, table.ids, table.labels, "A") == [11, 11, 11]
    assert per_class(sets, table.ids, table.labels, "shared") == [1, 1, 1]
    assert per_class(sets, table.ids, table.labels, "X") == [7, 7, 7]
    assert per_class(sets, table.ids, table.labels, "T") == [2, 2, 2]


# Ingest: decoding, caching, bad files, resume -------------------------------------------------------
def entries_of(folder: Path, count: int, size=(60, 40)) -> list[Entry]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        path = folder / f"img_{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
        out.append(Entry(id=f"img_{i:03d}", path=path, label=f"c{i % 2}",
                         boxes=np.array([[5.0, 5.0, 20.0, 20.0]]), annotation=f"ann_{i}.xml"))
    return out


def test_ingest_caches_squashed_pixels_sizes_and_hashes(tmp_path):
    entries = entries_of(tmp_path, 6)
    table = ingest(entries, quiet_data(), tmp_path / "data", log=lambda _: None)
    assert table.images.shape == (6, 32, 32, 3) and isinstance(table.images, np.memmap)
    assert table.sizes.tolist() == [[60, 40]] * 6
    expected = decode_file(entries[3].path, 32)
    assert np.array_equal(table.images[3], expected.pixels)
    assert table.content_hashes[3] == expected.sha256 and int(table.perceptual_hashes[3]) == expected.phash
    assert table.class_names.tolist() == ["c0", "c1"] and table.labels.tolist() == [0, 1, 0, 1, 0, 1]
    again = load_catalog(tmp_path / "data")
    assert np.array_equal(again.images, table.images)


def test_ingest_with_worker_processes_matches_the_main_process(tmp_path):
    entries = entries_of(tmp_path, 10)
    single = ingest(entries, quiet_data(workers=0), tmp_path / "a", log=lambda _: None)
    multi = ingest(entries, quiet_data(workers=2), tmp_path / "b", log=lambda _: None)
    assert np.array_equal(single.images, multi.images)
    assert np.array_equal(single.perceptual_hashes, multi.perceptual_hashes)


def test_corrupt_jpeg_names_the_file_in_plain_words_and_leaves_no_partial_files(tmp_path):
    entries = entries_of(tmp_path, 12)
    good = entries[9].path.read_bytes()
    entries[9].path.write_bytes(good[: len(good) // 3])  # truncated
    out = tmp_path / "data"
    with pytest.raises(DataError, match="img_009.jpg' cannot be decoded: the file is truncated") as caught:
        ingest(entries, quiet_data(), out, log=lambda _: None)
    assert "BytesIO" not in str(caught.value) and "\n" not in str(caught.value)
    # A failed pass keeps nothing a later one could mistake for progress.
    assert sorted(path.name for path in out.iterdir()) == []
    entries[9].path.write_bytes(good)
    fixed = ingest(entries, quiet_data(), out, log=lambda _: None)
    fresh = ingest(entries, quiet_data(), tmp_path / "fresh", log=lambda _: None)
    assert np.array_equal(fixed.images, fresh.images)


def test_an_interrupted_image_pass_keeps_its_progress_and_resumes(tmp_path, monkeypatch):
    import dejavu.data.catalog as catalog
    from dejavu.data.decode import DecodedImages

    monkeypatch.setattr(catalog, "CHUNK", 4)
    entries = entries_of(tmp_path, 40)
    decode = DecodedImages.__getitem__

    def interrupted(self, index):
        if index == 35:
            raise KeyboardInterrupt
        return decode(self, index)

    monkeypatch.setattr(DecodedImages, "__getitem__", interrupted)
    out = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        ingest(entries, quiet_data(), out, log=lambda _: None)
    assert int(np.load(out / "ingest.partial.npz")["done"]) == 32  # the first batch of 32
    monkeypatch.setattr(DecodedImages, "__getitem__", decode)
    messages = []
    resumed = ingest(entries, quiet_data(), out, log=messages.append)
    assert any("resuming the image pass at 32/40" in m for m in messages)
    fresh = ingest(entries, quiet_data(), tmp_path / "fresh", log=lambda _: None)
    assert np.array_equal(resumed.images, fresh.images)
    assert np.array_equal(resumed.perceptual_hashes, fresh.perceptual_hashes)
    assert not (out / "ingest.partial.npz").exists() and not (out / "images.partial.npy").exists()


def test_grayscale_cmyk_and_alpha_images_are_converted(tmp_path):
    keys = write_example("imagenet", tmp_path / "ex", odd_images=True)
    data = quiet_data(root=keys["root"])
    entries = read_entries(data)
    odd = [e for e in entries if "_odd_" in e.id]
    assert {e.path.suffix.lower() for e in odd} >= {".png"}
    modes = {Image.open(e.path).mode for e in odd}
    assert {"L", "CMYK", "RGBA"} <= modes
    table = ingest(entries, data, tmp_path / "data", log=lambda _: None)
    for entry in odd:
        row = int(np.flatnonzero(table.ids == entry.id)[0])
        pixels = table.images[row]
        assert pixels.shape == (32, 32, 3) and pixels.std() > 0


def test_boxes_partly_outside_are_clipped_with_a_warning_and_fully_outside_rejected(tmp_path):
    entries = entries_of(tmp_path, 3)
    entries[0] = Entry(entries[0].id, entries[0].path, "c0", np.array([[50.0, 30.0, 90.0, 45.0]]), "a.xml")
    messages = []
    ingest(entries, quiet_data(), tmp_path / "ok", log=messages.append)
    report = json.loads((tmp_path / "ok" / "ingest.json").read_text())
    assert report["clipped"] == 1 and "img_000" in report["clipped_examples"][0]
    assert any("clipped" in m for m in messages)
    entries[1] = Entry(entries[1].id, entries[1].path, "c1", np.array([[70.0, 0.0, 90.0, 10.0]]), "b.xml")
    with pytest.raises(DataError, match=r"img_001 object 0 .*b\.xml"):
        ingest(entries, quiet_data(), tmp_path / "bad", log=lambda _: None)
    assert not (tmp_path / "bad" / "catalog.npz").exists()


def test_missing_image_root_and_annotation_folder_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        read_entries(quiet_data(root=str(tmp_path / "nowhere")))
    keys = write_example("imagenet", tmp_path / "ex")
    with pytest.raises(DataError, match="missing-annotations"):
        read_entries(quiet_data(root=keys["root"], annotations=str(tmp_path / "missing-annotations")))


def test_a_class_too_small_for_n_fails_the_split_naming_the_class(examples, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["split", "--config", str(TINY_CONFIG), *shorthands(examples["imagenet"]), "--per-class", "30",
                 "--out", str(out)])
    assert code == 2
    error = capsys.readouterr().err
    assert "class 'n0000000" in error and "30 per class" in error
    assert not (out / "data" / "split.json").exists()


# Leakage -------------------------------------------------------------------------------------------
def duplicate_into_other_class(keys: dict, recompress: bool) -> None:
    """Copy one image of class 1 into class 2 under a new id (an exact or a re-encoded duplicate)."""
    train = Path(keys["root"])
    source = sorted((train / "n00000001").glob("*.JPEG"))[-1]
    target = train / "n00000002" / "n00000002_900.JPEG"
    if recompress:
        Image.open(source).save(target, quality=70)
    else:
        shutil.copyfile(source, target)


@pytest.mark.parametrize("recompress", [False, True])
def test_cross_set_duplicates_refuse_the_split_until_dropped_or_allowed(tmp_path, capsys, recompress):
    keys = write_example("imagenet", tmp_path / "ex")
    duplicate_into_other_class(keys, recompress)
    base = ["split", "--config", str(TINY_CONFIG), *shorthands(keys), "split.drop_duplicates=false",
            "split.near_duplicate_distance=0"]
    # Distance 0 keeps the synthetic look-alikes of the examples out; a re-encoded copy still hashes equal.
    # The extra copy lands in some set; its twin in another one unless both fall in one set, so try seeds.
    refused = None
    for seed in range(8):
        out = tmp_path / f"refuse{seed}"
        if main([*base, f"seed={seed}", "--out", str(out)]) == 2:
            refused = seed
            break
    assert refused is not None, "no seed put the two copies in different sets"
    error = capsys.readouterr().err
    kind = "near-duplicate" if recompress else "exact"
    assert "leakage check failed" in error and "split.drop_duplicates=true" in error and "n00000002_900" in error
    assert ("0 exact and 1 near" if recompress else "1 exact") in error, kind

    dropped = tmp_path / "dropped"
    assert main([*base, f"seed={refused}", "split.drop_duplicates=true", "--out", str(dropped)]) == 0
    split = json.loads((dropped / "data" / "split.json").read_text())
    assert split["leakage"]["ok"] and split["leakage"]["dropped_before_split"] >= 1
    assert "n00000002_900" in split["dropped_duplicates"] or any("n00000001" in i for i in split["dropped_duplicates"])

    allowed = tmp_path / "allowed"
    assert main(["run", *base[1:], f"seed={refused}", "split.allow_leakage=true", "--out", str(allowed)]) in FINISHED
    page = html.unescape((allowed / "report.html").read_text(encoding="utf-8"))
    assert "split.allow_leakage" in page and "n00000002_900" in page


# Crops at full resolution --------------------------------------------------------------------------
def test_crop_images_cut_the_original_file_at_full_resolution(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(pixels).save(path)
    square = np.array([[100, 50, 164, 114]])
    _, crop = CropImages([str(path)], square, 64)[0]
    expected = torch.from_numpy(pixels[50:114, 100:164].copy()).permute(2, 0, 1).float() / 255.0
    from dejavu.data.augment import normalise

    assert torch.allclose(crop, normalise(expected.unsqueeze(0))[0], atol=1e-5)


def test_jpeg_crops_decoded_with_draft_stay_inside_the_square(tmp_path):
    # A 640 x 480 JPEG whose left half is black and right half white; a square wholly in the black
    # half, decoded at reduced scale for a 16-px crop, must not pick up white from across the edge.
    pixels = np.zeros((480, 640, 3), dtype=np.uint8)
    pixels[:, 320:] = 255
    path = tmp_path / "half.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    _, crop = CropImages([str(path)], np.array([[160, 100, 320, 260]]), 16)[0]
    from dejavu.data.augment import STD, MEAN

    raw = crop * STD[0] + MEAN[0]
    assert float(raw.max()) < 0.1
    image, size = open_rgb(path, draft=(80, 60))
    assert size == (640, 480) and image.size[0] < 640


def test_file_source_and_array_source_yield_identical_batches(tmp_path):
    entries = entries_of(tmp_path, 8)
    table = ingest(entries, quiet_data(), tmp_path / "data", log=lambda _: None)
    chunks = [np.array([3, 1, 7]), np.array([0, 6])]
    cached = list(ArraySource(table.images).batches(chunks))
    streamed = list(FileSource(table.paths, 32, workers=0).batches(chunks))
    assert all(torch.equal(a, b) for a, b in zip(cached, streamed))
    assert torch.equal(cached[0][1], torch.from_numpy(np.array(table.images[1])))
