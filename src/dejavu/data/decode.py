"""Decoding image files: to RGB, at the resolution a stage needs, with errors that name the file.

Every reader's files go through :func:`open_rgb`: grayscale, CMYK, palette and alpha images are
converted to RGB (alpha is dropped), and a corrupt or truncated file is a :class:`DataError` naming
it. JPEGs are decoded with PIL's ``draft`` (libjpeg's DCT-domain downscaling by 1/2, 1/4 or 1/8)
whenever the stage needs fewer pixels than the file has, which makes decoding ImageNet-sized JPEGs
for a 64-px cache several times faster; for the cache, other formats are box-averaged down right after
decoding, so that a huge PNG is held once at full size, never as float copies. The data stage refuses,
from the header alone, images of more than ``data.max_pixels`` pixels or with a side below
``data.min_image_side`` (:func:`check_header`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dejavu.data.augment import normalise, resized
from dejavu.data.leakage import perceptual_hash
from dejavu.errors import DataError


# PIL's reduce() takes these modes directly; others are converted first (see _shrunk).
_REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "PA")


@contextlib.contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """PIL's decompression-bomb check off while we decode: :func:`check_header` is the limit instead.

    PIL warns above ``Image.MAX_IMAGE_PIXELS`` (89 M) and raises above twice that, inside ``Image.open``
    and so before any limit of ours could speak: a user who raised ``data.max_pixels`` would get PIL's
    warning or its exception instead of the image. Restored afterwards, so that PIL's users elsewhere in
    the process keep their default. (Decoding runs in the main process or in DataLoader processes,
    never in threads, so the switch is not raced.)
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_header(path: Path, size: tuple[int, int], max_pixels: int | None, min_side: int | None) -> None:
    """Refuse an image by the (width, height) of its header, before its pixels are decoded.

    max_pixels: ``data.max_pixels`` (None: no limit, for files the data stage already accepted);
    min_side: ``data.min_image_side`` (None: no minimum). Raises :class:`DataError` naming the file,
    its size and the key to change.

    Example:
        >>> check_header(Path("a.png"), (640, 480), max_pixels=50_000_000, min_side=16)
    """
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise DataError(
            f"image '{path}' is {width}x{height} = {width * height:,} pixels, more than data.max_pixels = "
            f"{max_pixels:,}; refused before decoding: downscale the file, remove it from the dataset, or raise "
            f"data.max_pixels to at least {width * height}"
        )
    if min_side is not None and min(width, height) < min_side:
        raise DataError(
            f"image '{path}' is {width}x{height} pixels, its shorter side below data.min_image_side = {min_side}; "
            "expected a picture, not a thumbnail or a broken file: remove it from the dataset, or lower "
            f"data.min_image_side to {max(1, min(width, height))}"
        )


def _why_undecodable(exc: Exception, data: bytes | None) -> str:
    """PIL's exception in plain words, without the ``<_io.BytesIO object at 0x...>`` it names files by."""
    detail = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the file", str(exc)) or type(exc).__name__
    if data is not None and not data:
        return "the file is empty (0 bytes)"
    if isinstance(exc, UnidentifiedImageError):
        return "its bytes are not an image format PIL can read (not a JPEG or PNG, or its header is damaged)"
    if isinstance(exc, EOFError) or "truncated" in detail.lower() or "broken data stream" in detail:
        return f"the file is truncated: it ends before its image data does ({detail})"
    return f"its image data is corrupt ({type(exc).__name__}: {detail})"


def _shrunk(image: Image.Image, need: tuple[int, int]) -> Image.Image:
    """``image`` box-averaged by the largest integer factor that keeps it at least ``need`` (JPEG's draft
    for every format): a 10,000 x 10,000 PNG then costs one decoded copy, not the float copies of a
    full-size perceptual hash and RGB conversion."""
    factor = min(image.width // max(need[0], 1), image.height // max(need[1], 1))
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE_MODES:
        # Palette images go through RGBA so that PIL does not warn about their transparency.
        image = image.convert("L" if image.mode == "1" else "I" if image.mode.startswith("I;16") else "RGBA")
    return image.reduce(factor)


def open_rgb(path: Path, data: bytes | None = None, draft: tuple[int, int] | None = None,
             max_pixels: int | None = None, min_side: int | None = None,
             shrink: bool = False) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``path`` (or its already-read bytes ``data``) to an RGB PIL image.

    draft: the smallest (width, height) the caller needs; a JPEG may then be decoded at 1/2, 1/4 or
    1/8 scale, never below it, and with ``shrink`` any other format is box-averaged down to it after
    decoding (which changes pixel positions by a non-power-of-two factor: crops, which need exact
    geometry, do not shrink). max_pixels, min_side: see :func:`check_header`, applied before decoding.
    Returns the image and the file's full (width, height): boxes and crops are in full-resolution
    pixels whatever the decoded size. Raises :class:`DataError` naming the file for an unreadable,
    empty, truncated, corrupt, too large or too small image.

    Example:
        >>> image, (width, height) = open_rgb(Path("n01440764_10026.JPEG"))
    """
    full_size = (0, 0)
    try:
        with _own_pixel_limit():
            image = Image.open(io.BytesIO(data) if data is not None else path)
            full_size = image.size
            check_header(path, full_size, max_pixels, min_side)
            if draft is not None and image.format == "JPEG":
                image.draft("RGB", draft)
            image.load()
            if shrink and draft is not None:
                image = _shrunk(image, draft)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            # 16-bit and float greyscale have no direct RGB conversion: scale to 8 bits first.
            array = np.asarray(image, dtype=np.float64)
            peak = array.max() if array.size and array.max() > 0 else 1.0
            image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        if image.mode != "RGB":
            image = image.convert("RGB")
    except Exception as exc:  # noqa: BLE001 -- PIL's plugins raise many types on hostile bytes
        raise _as_data_error(path, exc, data, full_size) from None
    return image, full_size


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding it; :class:`DataError` naming the
    file when it cannot be opened."""
    try:
        with _own_pixel_limit(), Image.open(path) as image:
            return image.size
    except Exception as exc:  # noqa: BLE001 -- as in open_rgb
        raise _as_data_error(path, exc, None, (0, 0)) from None


def _as_data_error(path: Path, exc: Exception, data: bytes | None, size: tuple[int, int]) -> DataError:
    """Any exception of opening or decoding ``path`` as one line naming the file and what is wrong."""
    if isinstance(exc, DataError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return DataError(f"image '{path}' does not exist; expected an image file: restore it or remove it from "
                         "the dataset")
    if isinstance(exc, OSError) and exc.errno is not None:  # the file system's error (permissions, a folder)
        return DataError(f"image '{path}' cannot be read ({exc.strerror}); expected a readable image file")
    if isinstance(exc, MemoryError):
        return DataError(
            f"image '{path}': not enough memory to decode it ({size[0]}x{size[1]} pixels); lower "
            "data.max_pixels to refuse such files, or data.workers to decode fewer at once"
        )
    return DataError(f"image '{path}' cannot be decoded: {_why_undecodable(exc, data)}; expected a readable JPEG "
                     "or PNG: replace the file or remove it from the dataset")


@dataclass(frozen=True)
class Decoded:
    """One decoded file: pixels squashed to (size, size, 3) uint8, its full size, content and perceptual hash."""

    pixels: np.ndarray
    width: int
    height: int
    sha256: str
    phash: int


def decode_file(path: Path, size: int, hashes: bool = True, max_pixels: int | None = None,
                min_side: int | None = None) -> Decoded:
    """Read ``path`` once: RGB pixels resized (aspect not kept) to ``size`` x ``size`` and, with ``hashes``,
    the SHA-256 of its bytes and its perceptual hash ("" and 0 without).

    Squashing keeps every pixel of the image and maps each box by a per-axis scale, so the cache
    stays one dense uint8 array; crops are cut from the original file (:class:`CropImages`), not from
    this array, so the attacked crops are not distorted. max_pixels, min_side: ``data.max_pixels`` and
    ``data.min_image_side``, checked from the header (:func:`check_header`).

    Example:
        >>> decode_file(Path("n01440764_10026.JPEG"), 64).pixels.shape
        (64, 64, 3)
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"image '{path}' does not exist; expected an image file: restore it or remove it from "
                        "the dataset") from None
    except OSError as exc:
        found = "is a folder" if Path(path).is_dir() else f"cannot be read ({exc.strerror or exc})"
        raise DataError(f"image '{path}' {found}; expected a readable image file") from None
    # The perceptual hash reads a 32 x 32 greyscale version, so never draft below that.
    need = (max(size, 32), max(size, 32))
    image, (width, height) = open_rgb(path, data, draft=need, max_pixels=max_pixels, min_side=min_side, shrink=True)
    pixels = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    if not hashes:
        return Decoded(pixels, width, height, "", 0)
    return Decoded(pixels, width, height, hashlib.sha256(data).hexdigest(), perceptual_hash(np.asarray(image)))


class DecodedImages(torch.utils.data.Dataset):
    """Files decoded to uint8 (size, size, 3) tensors, for a DataLoader with workers.

    An undecodable file yields its error message instead of raising inside a worker, so the main
    process can raise one clean :class:`DataError` (a worker's exception would carry its traceback).
    max_pixels, min_side: as :func:`decode_file` (None for files the data stage already accepted).
    """

    def __init__(self, paths: list[str] | np.ndarray, size: int, hashes: bool = True, max_pixels: int | None = None,
                 min_side: int | None = None):
        self.paths = [str(p) for p in paths]
        self.size = size
        self.hashes = hashes
        self.max_pixels = max_pixels
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, decode_file(Path(self.paths[index]), self.size, self.hashes, self.max_pixels, self.min_side)
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
        path = Path(self.paths[index])
        try:
            width, height = header_size(path)
            # Decode only as many pixels as the resized crop needs (at least `size` across the square).
            need = (math.ceil(width * self.size / side), math.ceil(height * self.size / side))
            image, (width, height) = open_rgb(path, draft=need)
        except DataError as exc:
            return index, str(exc)
        box = scaled_inwards((x0, y0, x1, y1), image.size[0] / width, image.size[1] / height)
        with _own_pixel_limit():
            pixels = np.asarray(image.crop(box), dtype=np.uint8)
        patch = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
        patch = resized(patch, self.size)
        return index, normalise(patch)[0]


def display_image(path: str, pixels: np.ndarray | None, max_side: int = 192) -> tuple[np.ndarray, float, float]:
    """An image for the report: the original file scaled to at most ``max_side`` (aspect kept), or,
    for the built-in data (no file), the stored pixels. Returns uint8 (h, w, 3) and the x and y scale
    from full-resolution pixels to it (multiply boxes by them)."""
    if not path:
        return np.asarray(pixels), 1.0, 1.0
    image, (width, height) = open_rgb(Path(path), draft=(max_side, max_side), shrink=True)
    factor = min(1.0, max_side / max(width, height))
    shown = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.BILINEAR)
    return np.asarray(shown, dtype=np.uint8), shown.size[0] / width, shown.size[1] / height
