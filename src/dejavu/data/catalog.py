"""The data stage: any dataset -> ``data/catalog.npz`` (labels, boxes, sizes, hashes) + ``data/images.npy``.

Real datasets are read once: every file is decoded (by DataLoader workers), checked, hashed (SHA-256
of its bytes for exact duplicates, a perceptual hash for near-duplicates) and, with ``data.cache``,
squashed to ``data.image_size`` pixels into one uint8 array that later stages memory-map, so that
training epochs and attacks never decode a JPEG again. The pass is resumable: a kill loses at most
the last chunk of images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from dejavu.config import DataConfig
from dejavu.data.coco import read_coco
from dejavu.data.decode import DecodedImages
from dejavu.data.entries import Entry, check_entries, keep_classes, require_folder
from dejavu.data.imagenet import read_imagenet, read_voc
from dejavu.data.leakage import perceptual_hash
from dejavu.data.manifest import read_manifest
from dejavu.data.records import ImageTable, pad_boxes
from dejavu.data.captioned import CaptionedScenes
from dejavu.data.scenes import ScenesDataset
from dejavu.data.sources import workers_of
from dejavu.errors import DataError, RunFolderError
from dejavu.runs import atomic_path, load_npz, save_npz, write_json

CATALOG = "catalog.npz"
IMAGES = "images.npy"
# Progress of an interrupted ingest is saved after this many images (and at the end).
CHUNK = 1024


def read_entries(data: DataConfig) -> list[Entry]:
    """The records of a file dataset (``data.dataset`` in imagenet, voc, coco, manifest), checked and sorted by id.

    COCO and manifest paths must resolve inside their root unless ``data.allow_outside_root``.
    """
    root = Path(data.root).expanduser() if data.root else None
    annotations = Path(data.annotations).expanduser() if data.annotations else None
    classes = list(data.classes) or None
    outside = data.allow_outside_root
    if root is None:
        raise DataError(f"config key 'data.root' is empty; dataset '{data.dataset}' needs the folder of its images")
    if data.dataset == "imagenet":
        entries = read_imagenet(root, annotations, classes)
    elif data.dataset == "voc":
        entries = read_voc(root, annotations, data.label_policy, classes)
    elif data.dataset == "coco":
        if annotations is None:
            raise DataError("config key 'data.annotations' is empty; dataset 'coco' needs the instances JSON file")
        require_folder(root, f"coco root '{root}'", "the folder of the images the JSON's file_name values name")
        captions = Path(data.captions).expanduser() if data.captions else None
        entries = read_coco(root, annotations, data.label_policy, classes, allow_outside_root=outside, captions=captions)
    elif data.dataset == "manifest":
        # data.root may be the manifest itself (paths relative to its folder) or the base folder of
        # the paths, with the manifest in data.annotations.
        if root.is_file():
            entries = read_manifest(root, None, allow_outside_root=outside)
        elif annotations is None:
            raise DataError(f"dataset 'manifest': data.root '{root}' is a folder, so data.annotations must name the CSV/JSONL manifest")
        else:
            require_folder(root, f"manifest root '{root}'", "the folder the manifest's paths are relative to")
            entries = read_manifest(annotations, root, allow_outside_root=outside)
    else:
        raise DataError(f"unknown dataset '{data.dataset}'")
    what = f"{data.dataset} dataset at '{root}'"
    return keep_classes(check_entries(entries, what), classes, what)


def build_scenes(data: DataConfig, seed: int, out_dir: Path) -> ImageTable:
    """Generate the built-in dataset, hash it, and write it as a catalog + pixel cache."""
    common = dict(n_classes=data.n_classes, images_per_class=data.images_per_class, image_size=data.image_size,
                  seed=seed, scene_correlation=data.scene_correlation, background_detail=data.background_detail,
                  object_scale=tuple(data.object_scale))
    if data.dataset == "captioned_scenes":
        dataset = CaptionedScenes(**common, objects=tuple(data.objects_per_image), caption_objects=data.caption_objects)
    else:
        dataset = ScenesDataset(**common)
    table = dataset.table(progress=True)
    table.content_hashes = np.array([hashlib.sha256(image.tobytes()).hexdigest() for image in table.images])
    table.perceptual_hashes = np.array([perceptual_hash(image) for image in table.images], dtype=np.uint64)
    _save_images(out_dir / IMAGES, table.images)
    save_npz(out_dir / CATALOG, **table.catalog_arrays())
    return table


def _save_images(path: Path, images: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        # A file handle: np.save given a path would append ".npy" to the temporary name.
        with open(tmp, "wb") as handle:
            np.save(handle, images, allow_pickle=False)


PROGRESS = "ingest.partial.npz"
PARTIAL_IMAGES = "images.partial.npy"


def discard_progress(out_dir: Path) -> None:
    """Remove an interrupted image pass's progress (``ingest.partial.npz``, ``images.partial.npy``)."""
    for name in (PROGRESS, PARTIAL_IMAGES):
        (out_dir / name).unlink(missing_ok=True)


def ingest(entries: list[Entry], data: DataConfig, out_dir: Path, log: Callable[[str], None] = print) -> ImageTable:
    """Decode, check, hash and (with ``data.cache``) cache every entry; write ``catalog.npz`` last.

    Resumable: ``images.partial.npy`` and ``ingest.partial.npz`` hold the images done so far and are
    reused by the next call with the same files and size. They survive a kill or an interrupt (that is
    what resuming needs) but not an error: a file that fails (corrupt, too large, too small, a box outside
    its image) raises :class:`DataError` after they are removed, so that a failed pass leaves nothing stale.

    Example:
        >>> table = ingest(read_entries(config.data), config.data, run.data_dir)
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _ingest(entries, data, out_dir, log)
    except Exception:
        # KeyboardInterrupt (and SIGKILL, which runs nothing) keep the progress for the resume.
        discard_progress(out_dir)
        raise


def _resumed(progress_path: Path, partial_path: Path, key: str, n: int, cache: bool,
             log: Callable[[str], None]) -> dict | None:
    """The saved progress of an interrupted pass over the same files, or None (none, another pass, or
    unreadable: then the pass starts over rather than trusting it)."""
    if not progress_path.is_file() or (cache and not partial_path.is_file()):
        return None
    try:
        saved = load_npz(progress_path)
        if str(saved["key"]) != key:
            return None
        done = int(saved["done"])
        arrays = {name: saved[name] for name in ("widths", "heights", "shas", "phashes")}
        if not 0 <= done <= n or any(array.shape != (n,) for array in arrays.values()):
            raise ValueError(f"done = {done} or arrays of shapes {[a.shape for a in arrays.values()]} for {n} images")
    except Exception as exc:  # noqa: BLE001 -- a damaged progress file only costs a fresh pass
        log(f"[data] ignoring the unreadable progress file {progress_path} ({type(exc).__name__}: {exc}); "
            "starting the image pass over")
        return None
    return {"done": done, **arrays}


def _ingest(entries: list[Entry], data: DataConfig, out_dir: Path, log: Callable[[str], None]) -> ImageTable:
    n, size = len(entries), data.image_size
    paths = np.array([str(e.path) for e in entries])
    key = hashlib.sha256(json.dumps([paths.tolist(), size, data.cache]).encode()).hexdigest()[:16]
    progress_path, partial_path = out_dir / PROGRESS, out_dir / PARTIAL_IMAGES

    widths, heights = np.zeros(n, np.int64), np.zeros(n, np.int64)
    shas, phashes, done = np.array([""] * n, dtype="<U64"), np.zeros(n, np.uint64), 0
    saved = _resumed(progress_path, partial_path, key, n, data.cache, log)
    images = None
    if saved is not None and data.cache:
        try:
            images = np.load(partial_path, mmap_mode="r+")
        except (OSError, ValueError) as exc:
            log(f"[data] ignoring the unreadable partial cache {partial_path} ({exc}); starting the image pass over")
            saved = None
        else:
            if images.shape != (n, size, size, 3) or images.dtype != np.uint8:
                log(f"[data] the partial cache {partial_path} holds {images.shape} {images.dtype}, not this pass's "
                    "images; starting the image pass over")
                del images
                images, saved = None, None
    if saved is not None:
        widths, heights, shas, phashes, done = (saved["widths"], saved["heights"], saved["shas"], saved["phashes"],
                                                saved["done"])
        log(f"[data] resuming the image pass at {done}/{n}")
    if data.cache and images is None:
        images = np.lib.format.open_memmap(partial_path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))

    def save_progress(count: int) -> None:
        if images is not None:
            images.flush()
        save_npz(progress_path, key=np.array(key), done=np.array(count), widths=widths, heights=heights,
                 shas=shas, phashes=phashes)

    workers = workers_of(data.workers)
    decoded = DecodedImages(paths, size, max_pixels=data.max_pixels, min_side=data.min_image_side)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(decoded, range(done, n)), batch_size=32, num_workers=workers, collate_fn=list,
    )
    # Closed however the pass ends, so that an error message starts on a line of its own.
    with tqdm(total=n, initial=done, desc="decode + cache images", unit="img", mininterval=1.0,
              dynamic_ncols=True) as bar:
        last_save = done
        for batch in loader:
            for index, item in batch:
                if isinstance(item, str):
                    raise DataError(f"{item} (entry '{entries[index].id}'{_source(entries[index])})")
                widths[index], heights[index], shas[index], phashes[index] = (item.width, item.height, item.sha256,
                                                                              item.phash)
                if images is not None:
                    images[index] = item.pixels
                done = index + 1
            bar.update(len(batch))
            if done - last_save >= CHUNK:
                save_progress(done)
                last_save = done
    save_progress(done)

    table, report = _decoded_table(entries, paths, np.stack([widths, heights], axis=1), shas, phashes, log)
    if images is not None:
        del images
        partial_path.replace(out_dir / IMAGES)
    elif (out_dir / IMAGES).exists():
        (out_dir / IMAGES).unlink()
    write_json(out_dir / "ingest.json", {"images": n, "cached": data.cache, "image_size": size, **report})
    save_npz(out_dir / CATALOG, **table.catalog_arrays())
    progress_path.unlink(missing_ok=True)
    return load_catalog(out_dir)


def _decoded_table(
    entries: list[Entry], paths: np.ndarray, sizes: np.ndarray, shas: np.ndarray, phashes: np.ndarray,
    log: Callable[[str], None],
) -> tuple[ImageTable, dict]:
    """The catalog table (no pixels) of the decoded entries, and the box check's report.

    ``sizes`` is (N, 2) decoded width and height; ``shas`` the SHA-256 hex digests and ``phashes``
    the uint64 perceptual hashes, one per entry. Labels index the sorted class names.
    """
    report = check_boxes(entries, sizes)
    if report["clipped"]:
        log(f"[data] warning: {report['clipped']} box(es) extend past their image and will be clipped; "
            f"first: {report['clipped_examples'][0]}")
    class_names = sorted({e.label for e in entries})
    index_of = {name: i for i, name in enumerate(class_names)}
    table = ImageTable(
        images=None, labels=np.array([index_of[e.label] for e in entries], dtype=np.int64),
        boxes=pad_boxes([e.boxes for e in entries]),
        ids=np.array([e.id for e in entries]), class_names=np.array(class_names), sizes=sizes, paths=paths,
        content_hashes=shas.astype(str), perceptual_hashes=phashes,
    )
    if any(e.caption for e in entries):
        # Objects of classes that label no image are dropped: the objects index the class names.
        table.objects = np.array([[name in e.objects for name in class_names] for e in entries], dtype=bool)
        table.captions = np.array([e.caption for e in entries])
    return table, report


def _source(entry: Entry) -> str:
    return f", annotation '{entry.annotation}'" if entry.annotation else ""


def check_boxes(entries: list[Entry], sizes: np.ndarray) -> dict:
    """Boxes against the decoded sizes: partly outside -> clipped later (counted here, with examples);
    entirely outside -> DataError naming every such box (the annotation does not belong to this image)."""
    clipped, examples, empty = 0, [], []
    for entry, (width, height) in zip(entries, sizes.tolist()):
        for number, (x0, y0, x1, y1) in enumerate(np.asarray(entry.boxes, dtype=np.float64).reshape(-1, 4).tolist()):
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                if min(x1, width) - max(x0, 0) <= 0 or min(y1, height) - max(y0, 0) <= 0:
                    empty.append(f"{entry.id} object {number} {[x0, y0, x1, y1]} in a {width}x{height} image{_source(entry)}")
                    continue
                clipped += 1
                if len(examples) < 10:
                    examples.append(f"{entry.id} object {number} {[x0, y0, x1, y1]} clipped to {width}x{height}{_source(entry)}")
    if empty:
        raise DataError(
            f"{len(empty)} box(es) lie entirely outside their image, so nothing remains after clipping: "
            + "; ".join(empty[:10]) + ("; ..." if len(empty) > 10 else "")
            + ". Expected boxes inside the image: fix or remove these annotations"
        )
    return {"clipped": clipped, "clipped_examples": examples}


def load_catalog(data_dir: Path, with_images: bool = True) -> ImageTable:
    """The data stage's table; the pixel cache is memory-mapped (None when the run has no cache)."""
    arrays = load_npz(data_dir / CATALOG)
    images = None
    if with_images and (data_dir / IMAGES).is_file():
        images = np.load(data_dir / IMAGES, mmap_mode="r")
        if len(images) != len(arrays["ids"]):
            raise RunFolderError(f"'{data_dir / IMAGES}' holds {len(images)} images but the catalog {len(arrays['ids'])}; re-run `dejavu data`")
    elif with_images and (not arrays["paths"].size or not str(arrays["paths"][0])):
        # Generated images exist only in the cache; file datasets can fall back to their files.
        raise RunFolderError(f"'{data_dir / IMAGES}' is missing: re-run `dejavu data`")
    return ImageTable(images=images, **arrays)
