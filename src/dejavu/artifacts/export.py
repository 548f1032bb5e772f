"""``data/export/``: the split as plain files, to train the target and the reference with any trainer.

Written by the split stage from ``data/split.json`` as read back (the exact sets and training rows
dejavu's own training uses), into a temporary folder that then replaces the previous export whole: no
file of an earlier split survives a re-run. What it holds (see :data:`README`):

- ``A.txt``, ``B.txt``, ``shared.txt`` (empty under the balanced scheme), ``X.txt``, ``T.txt``: one
  absolute image path per line, sorted by id;
- ``train_A.txt``, ``train_B.txt``: what one epoch of dejavu's training of the target (reference) shows,
  its set plus the shared set, each canary of A ``canary_repeats`` times (sorted by id, repeats adjacent);
- ``sets.csv`` (id, path, label, class, set) and ``classes.txt`` (the class names, index order);
- ``train_A.tsv``, ``train_B.tsv`` for captioned data: the training lists with their captions, in the CSV
  form open_clip's trainer reads (tab-separated ``filepath`` and ``title``);
- ``images/<class>/<id>.png``: the built-in scenes' pixels (they have no files), an ImageFolder layout;
  a file dataset's lists name its original files instead (nothing copied);
- ``README.txt``.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from dejavu.artifacts.catalog import load_table
from dejavu.artifacts.files import write_csv
from dejavu.artifacts.split import read_split, training_rows
from dejavu.cpus import usable_cpus
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.errors import DataError
from dejavu.runs import Run, write_text

EXPORT = "export"
# Set order in the export's files (the lists, sets.csv).
EXPORT_SETS = ("A", "B", "shared", "X", "T")
SETS_COLUMNS = ("id", "path", "label", "class", "set")
CAPTION_COLUMNS = ("filepath", "title")  # open_clip_train's --csv-img-key and --csv-caption-key defaults
_TEMPORARY = ".export."  # prefix of the folder being written, and of the one being replaced

README = """\
What dejavu's split stage exported: its sets as plain files, to train models elsewhere and audit them
with `dejavu audit`. Rewritten whole by each run of the split stage (`dejavu split --out {root}`).

A.txt, B.txt       the target's (A) and the reference's (B) own training images
shared.txt         images both models train on (the paper's scheme; empty under the balanced one)
X.txt              the public set: the attack's nearest-neighbour pool; train on none of it
T.txt              held-out control images; train on none of it
train_A.txt        what one epoch of dejavu's training of the target shows: A + shared{canaries}
train_B.txt        the same for the reference: B + shared
sets.csv           id, path, label (class index), class (name), set: one row per image of a set
classes.txt        the class names, one a line, in label order (line 1 is label 0)
{captions}{images}
Each .txt holds one absolute image path a line, sorted by id (a path listed twice is shown twice
per epoch). Train the target on train_A.txt and the reference on train_B.txt with the same recipe
(method, epochs, augmentations: only the data differ), then audit both:

    dejavu audit --out {root} --target A.pth --reference B.pth

The paths are absolute: moving the run folder (or the dataset) breaks them; run the split again.
"""


def export_dir(run: Run) -> Path:
    return run.data_dir / EXPORT


def discard_export(data_dir: Path) -> None:
    """Remove ``data/export`` and what a killed export left beside it (its temporary folders)."""
    for path in [data_dir / EXPORT, *data_dir.glob(f"{_TEMPORARY}*")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def write_export(run: Run, table: ImageTable | None = None) -> Path:
    """``data/export/`` from ``data/split.json`` and the catalog (``table``, read when not given); returns it.

    Written into ``data/.export.<pid>-<random>.tmp`` then renamed to ``data/export``; the previous export
    is moved aside first and removed after, so a failure leaves the previous export (or none) and never
    a mix of two splits."""
    table = table if table is not None else load_table(run, with_images=False)
    split = read_split(run, table)
    final = export_dir(run)
    # The stages run under the folder's lock: any temporary export here is a killed writer's leftover.
    for leftover in run.data_dir.glob(f"{_TEMPORARY}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary = run.data_dir / f"{_TEMPORARY}{tag}.tmp"
    aside = run.data_dir / f"{_TEMPORARY}old.{tag}.tmp"
    temporary.mkdir(parents=True)  # honours the umask, unlike mkdtemp's 0700
    try:
        _write_files(run, table, split.sets, split.canaries, split.canary_repeats, temporary, final)
        if final.exists() or final.is_symlink():
            os.replace(final, aside)
        os.replace(temporary, final)
    finally:
        for path in (temporary, aside):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
    return final


def _write_files(run: Run, table: ImageTable, sets: dict[str, np.ndarray], canaries: np.ndarray, repeats: int,
                 out: Path, final: Path) -> None:
    """Every file of the export into ``out``, naming paths as they will be under ``final``."""
    rows = {name: _sorted_rows(table, index_of_ids(table.ids, sets[name], f"split set {name}"))
            for name in EXPORT_SETS}
    exported = np.concatenate([rows[name] for name in EXPORT_SETS])
    paths = np.array([os.path.abspath(p) if p else "" for p in table.paths.tolist()], dtype=object)
    generated = exported[paths[exported] == ""]
    if len(generated):
        pixels = load_table(run, with_images=True).images
        if pixels is None:
            raise DataError(f"'{run.data_dir / 'images.npy'}' is missing: re-run `dejavu data --out {run.root}`")
        names = {row: _png_name(table, row) for row in generated.tolist()}
        for folder in sorted({name.parent for name in names.values()}):
            (out / folder).mkdir(parents=True)
        # Pillow's encoder lets go of the interpreter lock: threads encode side by side. Each file
        # depends on its own pixels alone, so the export is the same whatever the order or thread count.
        with ThreadPoolExecutor(max_workers=min(8, usable_cpus())) as pool:
            list(pool.map(lambda row: _write_png(out / names[row], pixels[row]), names))
        base = Path(os.path.abspath(final))
        for row, name in names.items():
            paths[row] = str(base / name)
    for name in EXPORT_SETS:
        _write_list(out / f"{name}.txt", paths[rows[name]])
    for model in ("A", "B"):
        trained = _sorted_rows(table, training_rows(table, sets, model, canaries, repeats))
        _write_list(out / f"train_{model}.txt", paths[trained])
        if table.captions is not None:  # open_clip_train's CSV input: tab-separated, filepath and title columns
            write_csv(out / f"train_{model}.tsv", CAPTION_COLUMNS,
                      ([paths[row], str(table.captions[row])] for row in trained.tolist()), delimiter="\t")
    classes = table.class_names.tolist()
    write_text(out / "classes.txt", "".join(f"{name}\n" for name in classes))
    write_csv(out / "sets.csv", SETS_COLUMNS,
              ([str(table.ids[row]), paths[row], int(table.labels[row]), classes[int(table.labels[row])], name]
               for name in EXPORT_SETS for row in rows[name].tolist()))
    canary_note = f" (its {len(canaries)} canaries {repeats} times each)" if len(canaries) and repeats > 1 else ""
    images = ("images/            the scenes' pixels as PNG files, images/<class>/<id>.png (they have no files of "
              "their own)\n" if len(generated) else "")
    captions = ("train_A.tsv        captioned data: train_A.txt's images with their captions (filepath, title; tab-\n"
                "train_B.tsv        separated), the CSV input of open_clip's trainer (python -m open_clip_train.main\n"
                "                   --dataset-type csv --train-data train_A.tsv); audit with --arch open_clip:NAME\n"
                if table.captions is not None else "")
    write_text(out / "README.txt", README.format(root=os.path.abspath(run.root), canaries=canary_note, images=images,
                                                 captions=captions))


def _sorted_rows(table: ImageTable, rows: np.ndarray) -> np.ndarray:
    """``rows`` ordered by their images' ids (stable: a repeated row's copies stay together)."""
    return rows[np.argsort(table.ids[rows], kind="stable")]


def _png_name(table: ImageTable, row: int) -> Path:
    class_name, identifier = str(table.class_names[table.labels[row]]), str(table.ids[row])
    for part in (class_name, identifier):
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise DataError(f"cannot export image {identifier!r} of class {class_name!r} as a file: the id or "
                            "class name is not a valid file name")
    return Path("images") / class_name / f"{identifier}.png"


def _write_png(path: Path, image: np.ndarray) -> None:
    """``image`` (uint8 H x W x 3) as a PNG at ``path``, a new file in the export's temporary folder: the
    folder's rename publishes it with every other file at once (an atomic write per image would cost
    more than the encoding)."""
    with open(path, "xb") as handle:
        handle.write(png_bytes(image))


def png_bytes(image: np.ndarray) -> bytes:
    """A lossless 8-bit RGB PNG of ``image`` (uint8 H x W x 3), by Pillow at zlib level 1 (the fastest: the
    export of the demo's 7,000 images of 64 px takes a few seconds on 2 cores, in threads, since Pillow's
    encoder lets go of the interpreter lock). Deterministic: the same pixels give the same bytes."""
    height, width, channels = image.shape
    if image.dtype != np.uint8 or channels != 3:
        raise ValueError(f"expected uint8 (H, W, 3) pixels, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()



def _write_list(path: Path, paths: np.ndarray) -> None:
    for item in paths.tolist():
        if "\n" in item or "\r" in item:
            raise DataError(f"cannot list image path {item!r} one a line: it holds a line break")
    write_text(path, "".join(f"{item}\n" for item in paths.tolist()))

