"""Decoding image files: to RGB, at the resolution a stage needs, with errors that name the file.

Every reader's files go through :func:`open_rgb`: grayscale, CMYK, palette and alpha images are
converted to RGB (alpha is dropped), and a corrupt or truncated file is a :class:`DataError` naming
it. JPEGs are decoded with PIL's ``draft`` (libjpeg's DCT-domain downscaling by 1/2, 1/4 or 1/8)
whenever the stage needs fewer pixels than the file has, which makes decoding ImageNet-sized JPEGs
for a 64-px cache several times faster.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dejavu.data.augment import normalise
from dejavu.data.leakage import perceptual_hash
from dejavu.errors import DataError


def open_rgb(path: Path, data: bytes | None = None, draft: tuple[int, int] | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``path`` (or its already-read bytes ``data``) to an RGB PIL image.

    draft: the smallest (width, height) the caller needs; a JPEG may then be decoded at 1/2, 1/4 or
    1/8 scale, never below it. Returns the image and the file's full (width, height): boxes and crops
    are in full-resolution pixels whatever the decoded size.

    Example:
        >>> image, (width, height) = open_rgb(Path("n01440764_10026.JPEG"))
    """
    try:
        image = Image.open(io.BytesIO(data) if data is not None else path)
        full_size = image.size
        if draft is not None and image.format == "JPEG":
            image.draft("RGB", draft)
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            # 16-bit and float greyscale have no direct RGB conversion: scale to 8 bits first.
            array = np.asarray(image, dtype=np.float64)
            peak = array.max() if array.size and array.max() > 0 else 1.0
            image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
        if image.mode != "RGB":
            image = image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"image '{path}' cannot be decoded ({type(exc).__name__}: {exc}); expected a readable JPEG or PNG: "
            "replace the file or remove it from the dataset"
        ) from None
    return image, full_size


@dataclass(frozen=True)
class Decoded:
    """One decoded file: pixels squashed to (size, size, 3) uint8, its full size, content and perceptual hash."""

    pixels: np.ndarray
    width: int
    height: int
    sha256: str
    phash: int


def decode_file(path: Path, size: int, hashes: bool = True) -> Decoded:
    """Read ``path`` once: RGB pixels resized (aspect not kept) to ``size`` x ``size`` and, with ``hashes``,
    the SHA-256 of its bytes and its perceptual hash ("" and 0 without).

    Squashing keeps every pixel of the image and maps each box by a per-axis scale, so the cache
    stays one dense uint8 array; crops are cut from the original file (:class:`CropImages`), not from
    this array, so the attacked crops are not distorted.

    Example:
        >>> decode_file(Path("n01440764_10026.JPEG"), 64).pixels.shape
        (64, 64, 3)
    """
    data = Path(path).read_bytes() if Path(path).is_file() else None
    if data is None:
        raise DataError(f"image '{path}' does not exist or is not a file")
    # The perceptual hash reads a 32 x 32 greyscale version, so never draft below that.
    image, (width, height) = open_rgb(path, data, draft=(max(size, 32), max(size, 32)))
    pixels = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    if not hashes:
        return Decoded(pixels, width, height, "", 0)
    return Decoded(pixels, width, height, hashlib.sha256(data).hexdigest(), perceptual_hash(np.asarray(image)))


class DecodedImages(torch.utils.data.Dataset):
    """Files decoded to uint8 (size, size, 3) tensors, for a DataLoader with workers.

    An undecodable file yields its error message instead of raising inside a worker, so the main
    process can raise one clean :class:`DataError` (a worker's exception would carry its traceback).
    """

    def __init__(self, paths: list[str] | np.ndarray, size: int, hashes: bool = True):
        self.paths = [str(p) for p in paths]
        self.size = size
        self.hashes = hashes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, decode_file(Path(self.paths[index]), self.size, self.hashes)
        except DataError as exc:
            return index, str(exc)


def scaled_inwards(square: tuple[int, int, int, int], scale_x: float, scale_y: float) -> tuple[int, int, int, int]:
    """A full-resolution half-open square in the pixels of a downscaled decode, rounded inwards (at least
    1 x 1), so that a border pixel of the smaller image never averages in a pixel from outside the square."""
    x0, y0, x1, y1 = square
    left, top = math.ceil(x0 * scale_x), math.ceil(y0 * scale_y)
    return left, top, max(math.floor(x1 * scale_x), left + 1), max(math.floor(y1 * scale_y), top + 1)


class CropImages(torch.utils.data.Dataset):
    """Squares cut from the original files at full resolution, resized to ``size``, normalised.

    squares: int (N, 4) half-open xyxy in the file's full-resolution pixels. Returns float
    (3, size, size) tensors, resized like :func:`dejavu.data.augment.eval_crops` (antialiased bilinear).
    """

    def __init__(self, paths: list[str] | np.ndarray, squares: np.ndarray, size: int):
        self.paths = [str(p) for p in paths]
        self.squares = np.asarray(squares, dtype=np.int64).reshape(-1, 4)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        x0, y0, x1, y1 = self.squares[index].tolist()
        side = max(x1 - x0, 1)
        try:
            probe = Image.open(self.paths[index])
            width, height = probe.size
            probe.close()
            # Decode only as many pixels as the resized crop needs (at least `size` across the square).
            need = (math.ceil(width * self.size / side), math.ceil(height * self.size / side))
            image, (width, height) = open_rgb(Path(self.paths[index]), draft=need)
        except (OSError, DataError) as exc:
            return index, str(exc)
        box = scaled_inwards((x0, y0, x1, y1), image.size[0] / width, image.size[1] / height)
        pixels = np.asarray(image.crop(box), dtype=np.uint8)
        patch = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
        patch = F.interpolate(patch, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return index, normalise(patch)[0]


def display_image(path: str, pixels: np.ndarray | None, max_side: int = 192) -> tuple[np.ndarray, float, float]:
    """An image for the report: the original file scaled to at most ``max_side`` (aspect kept), or,
    for the built-in data (no file), the stored pixels. Returns uint8 (h, w, 3) and the x and y scale
    from full-resolution pixels to it (multiply boxes by them)."""
    if not path:
        return np.asarray(pixels), 1.0, 1.0
    image, (width, height) = open_rgb(Path(path), draft=(max_side, max_side))
    factor = min(1.0, max_side / max(width, height))
    shown = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.BILINEAR)
    return np.asarray(shown, dtype=np.uint8), shown.size[0] / width, shown.size[1] / height
