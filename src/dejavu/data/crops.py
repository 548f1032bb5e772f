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
    pixels = _clip_whole_pixel_boxes(boxes, width, height, "largest_empty_rectangle")
    return _search(pixels, int(width), int(height))


def _clip_whole_pixel_boxes(boxes: np.ndarray, width: int, height: int, name: str) -> np.ndarray:
    """Whole-pixel (m, 4) boxes clipped to the image, empty ones dropped: int64 (k, 4), k <= m."""
    array = _as_box_array(boxes, name)
    if array.shape[0] and not np.array_equal(array, np.round(array)):
        raise DataError(f"{name}: boxes must hold whole pixels; convert them with boxes_to_pixels")
    limits = np.array([width, height, width, height], dtype=np.int64)
    pixels = np.clip(array.astype(np.int64), 0, limits)
    return pixels[(pixels[:, 0] < pixels[:, 2]) & (pixels[:, 1] < pixels[:, 3])]


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


def paper_periphery_rect(boxes: np.ndarray, width: int, height: int) -> Rect | None:
    """The periphery rectangle of Meehan et al. (2023), for exact reproduction of the paper.

    boxes: int (m, 4) half-open pixel boxes, as returned by ``boxes_to_pixels``; clipped to the
    image and empty ones ignored, as in ``largest_empty_rectangle``.
    The paper's rule: the x-axis is cut at 0, ``width`` and every box's x0 and x1; in each x-interval
    [a, b) between consecutive cuts, the y-gaps left between the merged y-intervals of the boxes that
    overlap it (bx0 < b and a < bx1), together with 0 and ``height``, give candidates (a, y0, b, y1).
    The candidate with the longest shortest side wins; ties go to the larger area, then to the
    smallest (y0, x0, y1, x1), as in ``largest_empty_rectangle``. Returns half-open
    ``(x0, y0, x1, y1)``; None when every pixel is covered; the whole image when there is no box.
    A candidate never spans a box's x-edge, so this is *not* the largest empty rectangle: with a box
    in the middle it misses the full-width strip above the box, and its short side can be smaller
    than ``largest_empty_rectangle``'s (never larger; both are box-free).

    Example:
        >>> boxes = np.array([[10, 12, 20, 18]])
        >>> paper_periphery_rect(boxes, 30, 20), largest_empty_rectangle(boxes, 30, 20)
        ((0, 0, 10, 20), (0, 0, 30, 12))
    """
    _check_size(width, height, "paper_periphery_rect")
    pixels = _clip_whole_pixel_boxes(boxes, width, height, "paper_periphery_rect")
    return _paper_search(pixels, int(width), int(height))


def _paper_search(pixels: np.ndarray, width: int, height: int) -> Rect | None:
    """``paper_periphery_rect`` on int64 (m, 4) boxes already clipped and non-empty."""
    if pixels.shape[0] == 0:
        return (0, 0, width, height)
    bx0, by0, bx1, by1 = pixels.T
    # Cutting y at every box's y-edges too makes a grid of cells that each box either fully covers
    # or misses, because every box edge is a cut. Within one x-interval, the gaps between the merged
    # y-intervals are then exactly the maximal runs of free cells, found with one diff per column.
    xcuts = np.unique(np.concatenate(([0, width], bx0, bx1)))
    ycuts = np.unique(np.concatenate(([0, height], by0, by1)))
    xa, xb, ya, yb = xcuts[:-1], xcuts[1:], ycuts[:-1], ycuts[1:]
    x_hits = ((bx0 < xb[:, None]) & (xa[:, None] < bx1)).astype(np.float32)  # (nx, m)
    y_hits = ((by0 < yb[:, None]) & (ya[:, None] < by1)).astype(np.float32)  # (ny, m)
    # A cell is covered iff some box overlaps both its intervals; the float32 count is exact (m << 2**24).
    covered = np.ones((len(xa), len(ya) + 2), dtype=np.int8)  # padded with covered cells at 0 and H
    covered[:, 1:-1] = (x_hits @ y_hits.T) > 0
    step = np.diff(covered, axis=1)
    # -1 marks covered -> free (a run starts at that cell), +1 free -> covered (the run ends before
    # that cell). np.nonzero walks row-major, so the k-th start and k-th end belong to the same run.
    column, start = np.nonzero(step == -1)
    end = np.nonzero(step == 1)[1]
    if column.size == 0:
        return None
    x0, x1, y0, y1 = xa[column], xb[column], ycuts[start], ycuts[end]
    short = np.minimum(x1 - x0, y1 - y0)
    area = (x1 - x0) * (y1 - y0)
    # np.lexsort sorts by its last key first: longest short side, larger area, then (y0, x0, y1, x1).
    best = np.lexsort((x1, y1, x0, y0, -area, -short))[0]
    return (int(x0[best]), int(y0[best]), int(x1[best]), int(y1[best]))


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

    rect: the crop rectangle (half-open x0, y0, x1, y1), None when the image is skipped.
    square: ``centre_square(rect)``, None when skipped.
    short_side: min(w, h) of the best box-free rectangle (for ``corner_crop``: of the corner
        rectangle), even when skipped (0 if there is none).
    reason: "" when kept, otherwise why the image was skipped.
    overlaps_box: True when ``rect`` intersects a foreground box. Always False for a periphery crop,
        which is box-free by construction; a corner crop can contain part of the object, and the
        report must say how often.
    """

    rect: Rect | None
    square: Rect | None
    short_side: int
    reason: str
    overlaps_box: bool = False


PERIPHERY_RULES = ("optimal", "paper")


def _no_box_reason(boxes: np.ndarray, name: str) -> str:
    # Called when boxes_to_pixels kept no box: tell "no annotation" apart from "annotated off-frame".
    given = _as_box_array(boxes, name).shape[0]
    return "no foreground box" if given == 0 else f"no foreground box inside the image ({given} given)"


def periphery_crop(
    boxes: np.ndarray, width: int, height: int, min_side_px: int, rule: str = "optimal"
) -> Crop:
    """Choose the periphery crop of one image, or say why the image is skipped.

    boxes: float or int (m, 4) xyxy boxes in pixel coordinates (converted with ``boxes_to_pixels``).
    Images without a box are skipped ("no foreground box"): there is no object label to infer.
    Images whose boxes all fall outside the frame are skipped the same way.
    rule="optimal" (default): the crop is ``largest_empty_rectangle``, kept iff its shortest side
    >= ``min_side_px``.
    rule="paper" (Meehan et al. 2023, for exact reproduction): an image with a box whose unclipped
    x1 exceeds ``width`` is skipped, as the paper skips them; otherwise the crop is
    ``paper_periphery_rect``, kept iff its shortest side > ``min_side_px`` (strict, as the paper's
    "> 100 px").
    Raises DataError for a ``min_side_px`` that is not a positive integer or an unknown ``rule``.

    Example:
        >>> periphery_crop(np.array([[0, 0, 8, 8], [12, 12, 20, 20]]), 20, 20, min_side_px=12)
        Crop(rect=(8, 0, 20, 12), square=(8, 0, 20, 12), short_side=12, reason='', overlaps_box=False)
        >>> periphery_crop(np.array([[0, 0, 8, 8], [12, 12, 20, 20]]), 20, 20, 7, rule="paper").rect
        (12, 0, 20, 12)
    """
    if rule not in PERIPHERY_RULES:
        valid = ", ".join(map(repr, PERIPHERY_RULES))
        raise DataError(f"periphery_crop: unknown rule {rule!r}; expected one of {valid}")
    if isinstance(min_side_px, bool) or not isinstance(min_side_px, (int, np.integer)) or min_side_px < 1:
        raise DataError(f"periphery_crop: min_side_px must be a positive integer, got {min_side_px!r}")
    # Converting first also validates the boxes (shape, dtype, finite) before any rule looks at them.
    pixels = boxes_to_pixels(boxes, width, height)
    raw = _as_box_array(boxes, "periphery_crop")
    if raw.shape[0] == 0:
        return Crop(rect=None, square=None, short_side=0, reason="no foreground box")
    if rule == "paper" and bool((raw[:, 2] > width).any()):
        # Judged on the unclipped boxes: the paper drops these images rather than clipping them.
        return Crop(rect=None, square=None, short_side=0, reason="box extends past the right edge")
    if pixels.shape[0] == 0:
        return Crop(rect=None, square=None, short_side=0, reason=_no_box_reason(boxes, "periphery_crop"))
    # boxes_to_pixels already clipped and dropped empties; skip re-validating them.
    search = _paper_search if rule == "paper" else _search
    rect = search(pixels, int(width), int(height))
    if rect is None:
        return Crop(rect=None, square=None, short_side=0, reason="no box-free area")
    short_side = min(rect[2] - rect[0], rect[3] - rect[1])
    if rule == "paper" and short_side <= min_side_px:
        reason = f"shortest side {short_side} px <= min_side_px {min_side_px} (paper rule: strictly greater)"
        return Crop(rect=None, square=None, short_side=short_side, reason=reason)
    if rule == "optimal" and short_side < min_side_px:
        reason = f"shortest side {short_side} px < min_side_px {min_side_px}"
        return Crop(rect=None, square=None, short_side=short_side, reason=reason)
    return Crop(rect=rect, square=centre_square(rect), short_side=short_side, reason="")


def corner_crop(boxes: np.ndarray, width: int, height: int, fraction: float = 0.3) -> Crop:
    """The paper's corner-crop variant: a fixed lower-left rectangle, whatever the boxes.

    boxes: float or int (m, 4) xyxy boxes in pixel coordinates (converted with ``boxes_to_pixels``).
    The rectangle is ``(0, height - h, w, height)`` with ``w = round(fraction * width)`` and
    ``h = round(fraction * height)`` (Python's round, half to even), each at least 1 pixel; ``square``
    is its ``centre_square``. Unlike the periphery crop it may contain part of the object:
    ``overlaps_box`` says whether it intersects any box. It is always kept (reason ""), except that
    an image without a box inside the frame is skipped with the same reason as ``periphery_crop``
    ("no foreground box"), since it has no object label to infer; ``short_side`` is still the
    corner's. Raises DataError unless 0 < fraction <= 1.

    Example:
        >>> corner_crop(np.array([[40.0, 10.0, 90.0, 50.0]]), 100, 80)
        Crop(rect=(0, 56, 30, 80), square=(3, 56, 27, 80), short_side=24, reason='', overlaps_box=False)
    """
    _check_size(width, height, "corner_crop")
    real = isinstance(fraction, (int, float, np.integer, np.floating)) and not isinstance(fraction, bool)
    # Written as "not (0 < f <= 1)" so that NaN, which fails every comparison, is rejected too.
    if not real or not 0.0 < float(fraction) <= 1.0:
        raise DataError(f"corner_crop: fraction must be a number in (0, 1], got {fraction!r}")
    width, height, fraction = int(width), int(height), float(fraction)
    w = max(1, round(fraction * width))
    h = max(1, round(fraction * height))
    rect = (0, height - h, w, height)
    short_side = min(w, h)
    pixels = boxes_to_pixels(boxes, width, height)
    if pixels.shape[0] == 0:
        # rect/square stay None: callers (e.g. the crops stage) read "kept" as "square is not None".
        reason = _no_box_reason(boxes, "corner_crop")
        return Crop(rect=None, square=None, short_side=short_side, reason=reason)
    x0, y0, x1, y1 = rect
    overlaps = bool(
        ((pixels[:, 0] < x1) & (x0 < pixels[:, 2]) & (pixels[:, 1] < y1) & (y0 < pixels[:, 3])).any()
    )
    return Crop(rect, centre_square(rect), short_side, reason="", overlaps_box=overlaps)
