"""Benchmark of image loading for training epochs: decoding the JPEGs every epoch vs the one-time cache.

On the same JPEG files (written once, ImageNet-like sizes by default), in one run, it times:

  (a) the plain decoder path: ``dejavu.data.sources.FileSource`` -- a DataLoader with ``--workers``
      processes decoding each file (PIL, with JPEG draft downscaling) and resizing it to ``--size``,
      in a random order, as a training epoch without the cache reads them;
  (b) the one-time cache build: ``dejavu.data.catalog.ingest`` (decode, SHA-256, perceptual hash,
      write the uint8 memory map) -- paid once per dataset;
  (c) the cached path: ``dejavu.data.sources.ArraySource`` on that memory map, same order, same batches.

(a) and (c) report the median over ``--epochs`` epochs of images per second; the ratio (c)/(a) is the
speed-up of repeated epochs. Both paths must return identical pixels (checked on one batch), else exit 1.
It prints Markdown for docs/benchmarks.md.

    PYTHONPATH=src python benchmarks/loading.py                  # 2,000 images of ~500 x 375, 3 epochs
    PYTHONPATH=src python benchmarks/loading.py --images 200 --epochs 1   # smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEG files to write and read")
    parser.add_argument("--size", type=int, default=64, help="side the images are decoded / cached at")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per path (median reported)")
    parser.add_argument("--batch", type=int, default=256, help="images per batch")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader decode processes")
    parser.add_argument("--folder", type=Path, default=None, help="where to write the files (default: a temp dir)")
    return parser.parse_args(argv)


def write_jpegs(folder: Path, count: int) -> list[Path]:
    """ImageNet-like files: 500 x 375 or 375 x 500 photos-ish (smooth gradients + texture), quality 90."""
    rng = np.random.default_rng(0)
    paths = []
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(count):
        base = rng.uniform(0, 255, 3)
        wave = np.sin(xx * rng.uniform(0.01, 0.2) + yy * rng.uniform(0.01, 0.2))[..., None]
        noise = rng.normal(0, 12, (375, 500, 3))
        pixels = np.clip(base + 60 * wave + noise, 0, 255).astype(np.uint8)
        if i % 2:
            pixels = pixels.transpose(1, 0, 2)
        path = folder / "images" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, quality=90)
        paths.append(path)
    return paths


def epoch_rate(source, n: int, batch: int, seed: int) -> tuple[float, torch.Tensor]:
    order = np.random.default_rng(seed).permutation(n)
    chunks = [order[s : s + batch] for s in range(0, n, batch)]
    start = time.perf_counter()
    first = None
    for block in source.batches(chunks):
        if first is None:
            first = block
    return n / (time.perf_counter() - start), first


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dejavu.config import DataConfig
    from dejavu.data.catalog import ingest
    from dejavu.data.entries import Entry
    from dejavu.data.sources import ArraySource, FileSource

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        t0 = time.perf_counter()
        paths = write_jpegs(folder, args.images)
        write_s = time.perf_counter() - t0
        plain = FileSource(np.array([str(p) for p in paths]), args.size, args.workers)
        plain_rates, plain_first = [], None
        for epoch in range(args.epochs):
            rate, first = epoch_rate(plain, len(paths), args.batch, epoch)
            plain_rates.append(rate)
            plain_first = first if epoch == 0 else plain_first

        entries = [Entry(id=p.stem, path=p, label="c", boxes=np.zeros((0, 4)), annotation="") for p in paths]
        config = DataConfig(dataset="manifest", root=str(folder), image_size=args.size, workers=args.workers)
        t0 = time.perf_counter()
        table = ingest(entries, config, folder / "cache", log=lambda message: None)
        build_s = time.perf_counter() - t0
        cached = ArraySource(table.images)
        cached_rates, cached_first = [], None
        for epoch in range(args.epochs):
            rate, first = epoch_rate(cached, len(paths), args.batch, epoch)
            cached_rates.append(rate)
            cached_first = first if epoch == 0 else cached_first
        identical = torch.equal(plain_first, cached_first)

    plain_median, cached_median = statistics.median(plain_rates), statistics.median(cached_rates)
    print(f"\n{args.images} JPEGs (~500 x 375, written in {write_s:.1f} s), decoded/cached at {args.size} px, "
          f"batch {args.batch}, {args.workers} DataLoader workers; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}\n")
    print("| path | images/s (median of %d epochs) | all epochs | vs plain |" % args.epochs)
    print("|---|---:|---|---:|")
    print(f"| (a) plain decoder (FileSource, DataLoader workers) | {plain_median:,.0f} | "
          f"{', '.join(f'{r:,.0f}' for r in plain_rates)} | 1.00x |")
    print(f"| (c) cached (ArraySource on the uint8 memory map) | {cached_median:,.0f} | "
          f"{', '.join(f'{r:,.0f}' for r in cached_rates)} | {cached_median / plain_median:,.1f}x |")
    print(f"\n(b) one-time cache build (decode + SHA-256 + perceptual hash + write): {build_s:.1f} s "
          f"= {args.images / build_s:,.0f} images/s; pays for itself after "
          f"{build_s / (args.images / plain_median):.1f} epochs.")
    print(f"Same pixels from both paths: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
