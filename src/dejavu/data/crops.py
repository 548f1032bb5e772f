"""Periphery crops: the largest box-free rectangle of an image, judged by its shortest side.

The deja vu attack asks a model to name the object of a training image from background alone, so
each image is reduced to the largest axis-aligned rectangle that touches none of its foreground
boxes. "Largest" means the longest *shortest* side, because the crop is later resized to a square
and a long thin strip carries little usable detail.

All rectangles here are integer, half-open pixel rectangles ``(x0, y0, x1, y1)``: they cover the
pixel columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dejavu.errors import DataError

Rect = tuple[int, int, int, int]

# Above this many (x-pair, y-pair, box) tests at once, the search works through the x-pairs in
# chunks so that memory stays bounded (tens of MB) however many boxes an image has.
_MAX_BROADCAST = 50_000_000


def _as_box_array(boxes: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(boxes)
    # A JSON list with no boxes arrives as shape (0,); it means "no boxes", not a malformed record.
    if array.shape == (0,):
        return np.zeros((0, 4), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise DataError(f"{name}: expected boxes of shape (m, 4) as x0, y0, x1, y1, got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise DataError(f"{name}: expected numeric boxes, got dtype {array.dtype}")
    return array


def _check_size(width: int, height: int, name: str) -> None:
    if int(width) < 1 or int(height) < 1:
        raise DataError(f"{name}: image size must be at least 1x1 pixels, got width={width}, height={height}")


def boxes_to_pixels(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Convert xyxy boxes in pixel coordinates to the half-open pixel boxes they touch.

    boxes: float or int (m, 4) as ``x0, y0, x1, y1``; shape (0,) is read as (0, 4), no boxes.
    Returns int64 (k, 4), k <= m: ``floor`` of x0, y0 and ``ceil`` of x1, y1, clipped to the image,
    so a box that covers part of a pixel claims that whole pixel (a sliver of the object left in
    the "background" crop would leak its label). Boxes left empty after clipping (x0 >= x1 or
    y0 >= y1: zero-size, inverted or outside the image) are dropped, in order otherwise kept.
    Raises DataError for a wrong shape, a non-numeric dtype or a NaN / infinite coordinate.

    Example:
        >>> boxes_to_pixels(np.array([[2.3, 1.0, 5.0, 3.7]]), width=8, height=8)
        array([[2, 1, 5, 4]])
    """
    _check_size(width, height, "boxes_to_pixels")
    array = _as_box_array(boxes, "boxes_to_pixels")
    if array.shape[0] == 0:
        return np.zeros((0, 4), dtype=np.int64)
    values = np.array(array, dtype=np.float64)
    if not np.isfinite(values).all():
        bad = array[~np.isfinite(values).all(axis=1)].tolist()
        raise DataError(f"boxes_to_pixels: box coordinates must be finite, got {bad}")
    np.floor(values[:, :2], out=values[:, :2])
    np.ceil(values[:, 2:], out=values[:, 2:])
    # Clip in float before the cast so that huge coordinates cannot overflow int64.
    np.maximum(values, 0.0, out=values)
    np.minimum(values, (width, height, width, height), out=values)
    pixels = values.astype(np.int64)
    keep = (pixels[:, 0] < pixels[:, 2]) & (pixels[:, 1] < pixels[:, 3])
    return pixels[keep]


@lru_cache(maxsize=256)
def _pair_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    # np.triu_indices dominates the per-image cost for a handful of boxes, and n is small and
    # repeats across images, so the index pairs are built once per n.
    low, high = np.triu_indices(n, k=1)
    low.setflags(write=False)
    high.setflags(write=False)
    return low, high


def _edge_pairs(edges: list[int]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array(edges, dtype=np.int64)
    low, high = _pair_index(len(values))
    return values[low], values[high]


def largest_empty_rectangle(boxes: np.ndarray, width: int, height: int) -> Rect | None:
    """The box-free rectangle with the longest shortest side (the true optimum, not a heuristic).

    boxes: int (m, 4) half-open pixel boxes, as returned by ``boxes_to_pixels``. Boxes are clipped
    to the image and empty ones ignored, so a box only ever blocks the pixels it covers.
    Returns half-open ``(x0, y0, x1, y1)`` with 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height that
    intersects no box (they intersect iff x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1),
    maximising min(x1 - x0, y1 - y0); ties go to the larger area, then to the smallest
    (y0, x0, y1, x1), so the answer is deterministic. None when every pixel is covered; the whole
    image when there is no box.

    Example:
        >>> largest_empty_rectangle(np.array([[0, 0, 8, 8], [12, 12, 20, 20]]), 20, 20)
        (8, 0, 20, 12)
    """
    _check_size(width, height, "largest_empty_rectangle")
    array = _as_box_array(boxes, "largest_empty_rectangle")
    if array.shape[0] and not np.array_equal(array, np.round(array)):
        raise DataError(
            "largest_empty_rectangle: boxes must hold whole pixels; convert them with boxes_to_pixels"
        )
    limits = np.array([width, height, width, height], dtype=np.int64)
    pixels = np.clip(array.astype(np.int64), 0, limits)
    pixels = pixels[(pixels[:, 0] < pixels[:, 2]) & (pixels[:, 1] < pixels[:, 3])]
    return _search(pixels, int(width), int(height))


def _search(pixels: np.ndarray, width: int, height: int) -> Rect | None:
    """``largest_empty_rectangle`` on int64 (m, 4) boxes already clipped and non-empty."""
    if pixels.shape[0] == 0:
        return (0, 0, width, height)
    # A best rectangle with maximal area cannot grow in any direction, so each of its edges lies on
    # the image border or on a box edge; searching only those coordinates is exhaustive.
    bx0, by0, bx1, by1 = pixels.T
    xl, xh = _edge_pairs(sorted({0, width, *bx0.tolist(), *bx1.tolist()}))
    yl, yh = _edge_pairs(sorted({0, height, *by0.tolist(), *by1.tolist()}))
    # Per axis, which boxes each interval overlaps; a candidate is blocked iff some box overlaps
    # both its x- and its y-interval, i.e. iff the boolean product of the two tables is non-zero.
    # A float32 matmul counts those boxes exactly (m << 2**24) and far faster than a 3-D broadcast.
    y_hits_t = ((yl[:, None] < by1) & (by0 < yh[:, None])).astype(np.float32).T
    widths, heights = xh - xl, yh - yl

    chunk = max(1, _MAX_BROADCAST // max(1, len(yl) * pixels.shape[0]))
    best_side, ties = 0, []
    for start in range(0, len(xl), chunk):
        lo, hi = xl[start : start + chunk], xh[start : start + chunk]
        x_hits = ((lo[:, None] < bx1) & (bx0 < hi[:, None])).astype(np.float32)
        short = np.minimum.outer(widths[start : start + chunk], heights)
        short[x_hits @ y_hits_t > 0] = 0
        side = int(short.max())
        if side == 0 or side < best_side:
            continue
        ix, iy = np.nonzero(short == side)
        found = list(zip(lo[ix].tolist(), yl[iy].tolist(), hi[ix].tolist(), yh[iy].tolist()))
        ties = found if side > best_side else ties + found
        best_side = side
    if not ties:
        return None
    # Few rectangles share the best shortest side, so the remaining tie-break is cheap in Python.
    return min(ties, key=lambda r: (-(r[2] - r[0]) * (r[3] - r[1]), r[1], r[0], r[3], r[2]))


def centre_square(rect: Rect) -> Rect:
    """The centred square of side min(w, h) inside ``rect`` (half-open, integer).

    When the slack (longer side minus shorter side) is odd, the square sits one pixel nearer the
    left/top edge, i.e. the offset is ``slack // 2``. Why a square: models see square inputs, and
    squashing a long strip would distort the per-image background detail the attack relies on.

    Example:
        >>> centre_square((0, 0, 10, 4))
        (3, 0, 7, 4)
    """
    x0, y0, x1, y1 = (int(v) for v in rect)
    width, height = x1 - x0, y1 - y0
    if width < 1 or height < 1:
        raise DataError(f"centre_square: rectangle {rect} is empty; expected x0 < x1 and y0 < y1")
    side = min(width, height)
    left = x0 + (width - side) // 2
    top = y0 + (height - side) // 2
    return (left, top, left + side, top + side)


@dataclass(frozen=True)
class Crop:
    """The outcome of cropping one image.

    rect: the periphery rectangle (half-open x0, y0, x1, y1), None when the image is skipped.
    square: ``centre_square(rect)``, None when skipped.
    short_side: min(w, h) of the best box-free rectangle, even when skipped (0 if there is none).
    reason: "" when kept, otherwise why the image was skipped.
    """

    rect: Rect | None
    square: Rect | None
    short_side: int
    reason: str


def periphery_crop(boxes: np.ndarray, width: int, height: int, min_side_px: int) -> Crop:
    """Choose the periphery crop of one image, or say why the image is skipped.

    boxes: float or int (m, 4) xyxy boxes in pixel coordinates (converted with ``boxes_to_pixels``).
    Images without a box are skipped ("no foreground box"): there is no object label to infer.
    Images whose boxes all fall outside the frame are skipped the same way. Otherwise the crop is
    ``largest_empty_rectangle``, kept iff its shortest side >= ``min_side_px``.

    Example:
        >>> periphery_crop(np.array([[0, 0, 8, 8], [12, 12, 20, 20]]), 20, 20, min_side_px=12)
        Crop(rect=(8, 0, 20, 12), square=(8, 0, 20, 12), short_side=12, reason='')
    """
    if isinstance(min_side_px, bool) or not isinstance(min_side_px, (int, np.integer)) or min_side_px < 1:
        raise DataError(f"periphery_crop: min_side_px must be a positive integer, got {min_side_px!r}")
    pixels = boxes_to_pixels(boxes, width, height)
    if pixels.shape[0] == 0:
        given = _as_box_array(boxes, "periphery_crop").shape[0]
        reason = "no foreground box" if given == 0 else f"no foreground box inside the image ({given} given)"
        return Crop(rect=None, square=None, short_side=0, reason=reason)
    # boxes_to_pixels already clipped and dropped empties; skip re-validating them.
    rect = _search(pixels, int(width), int(height))
    if rect is None:
        return Crop(rect=None, square=None, short_side=0, reason="no box-free area")
    short_side = min(rect[2] - rect[0], rect[3] - rect[1])
    if short_side < min_side_px:
        reason = f"shortest side {short_side} px < min_side_px {min_side_px}"
        return Crop(rect=None, square=None, short_side=short_side, reason=reason)
    return Crop(rect=rect, square=centre_square(rect), short_side=short_side, reason="")
