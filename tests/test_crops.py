"""Periphery crops against an exhaustive brute force on small images."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dejavu.data.crops import (
    Crop,
    boxes_to_pixels,
    centre_square,
    largest_empty_rectangle,
    periphery_crop,
)
from dejavu.errors import DataError

# ---------------------------------------------------------------------------------------------
# Independent reference: a pixel mask and every integer rectangle of the image.


def coverage_mask(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W) bool: pixel (x, y) is covered iff bx0 <= x < bx1 and by0 <= y < by1 for some box.

    Written per pixel (no slicing, no clipping) so that it shares no logic with the code under test.
    """
    xs = np.arange(width)[None, :]
    ys = np.arange(height)[:, None]
    mask = np.zeros((height, width), dtype=bool)
    for bx0, by0, bx1, by1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4).tolist():
        mask |= (bx0 <= xs) & (xs < bx1) & (by0 <= ys) & (ys < by1)
    return mask


def brute_force(mask: np.ndarray) -> tuple[int, int, tuple[int, int, int, int] | None]:
    """(best shortest side, best area among those, the (y0, x0, y1, x1)-smallest such rect)."""
    height, width = mask.shape
    best_key, best_rect = None, None
    for y0 in range(height):
        for y1 in range(y0 + 1, height + 1):
            for x0 in range(width):
                for x1 in range(x0 + 1, width + 1):
                    if mask[y0:y1, x0:x1].any():
                        break  # every wider rectangle from this x0 contains the same pixel
                    w, h = x1 - x0, y1 - y0
                    key = (-min(w, h), -w * h, y0, x0, y1, x1)
                    if best_key is None or key < best_key:
                        best_key, best_rect = key, (x0, y0, x1, y1)
    if best_key is None:
        return 0, 0, None
    return -best_key[0], -best_key[1], best_rect


def sides(rect: tuple[int, int, int, int]) -> tuple[int, int]:
    return rect[2] - rect[0], rect[3] - rect[1]


# Coordinates range past both borders so that boxes can be outside, clipped, image-filling,
# zero-size or inverted; few distinct values make overlapping and touching boxes common.
coord = st.integers(min_value=-2, max_value=14)
int_box = st.tuples(coord, coord, coord, coord)


@st.composite
def scene(draw, max_boxes: int = 5):
    width = draw(st.integers(1, 12))
    height = draw(st.integers(1, 12))
    boxes = draw(st.lists(int_box, min_size=0, max_size=max_boxes))
    # Boxes that hug the image are the interesting edge cases; add some built from the borders.
    if draw(st.booleans()):
        hugging = [(0, 0, width, height), (0, 0, width, 1), (width - 1, 0, width, height)]
        boxes.append(draw(st.sampled_from(hugging)))
    return width, height, np.array(boxes, dtype=np.int64).reshape(-1, 4)


def check_against_brute_force(boxes: np.ndarray, width: int, height: int, mask: np.ndarray) -> None:
    rect = largest_empty_rectangle(boxes, width, height)
    best_side, best_area, best_rect = brute_force(mask)
    if best_rect is None:
        assert rect is None
        return
    assert rect is not None
    x0, y0, x1, y1 = rect
    assert all(isinstance(v, int) for v in rect)
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert not mask[y0:y1, x0:x1].any()
    w, h = sides(rect)
    assert min(w, h) == best_side
    assert w * h == best_area
    assert rect == best_rect


# ---------------------------------------------------------------------------------------------
# largest_empty_rectangle


@settings(max_examples=300, deadline=None)
@given(scene())
def test_largest_empty_rectangle_matches_brute_force(case):
    width, height, raw = case
    pixels = boxes_to_pixels(raw, width, height)
    check_against_brute_force(pixels, width, height, coverage_mask(raw, width, height))


@settings(max_examples=150, deadline=None)
@given(scene())
def test_largest_empty_rectangle_accepts_unclipped_and_empty_int_boxes(case):
    # Out-of-image, zero-size and inverted boxes passed directly must block only what they cover.
    width, height, raw = case
    check_against_brute_force(raw, width, height, coverage_mask(raw, width, height))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_none_exactly_when_every_pixel_is_covered(width, height, data):
    # Tile the image with random cuts so that coverage is total, then maybe free one pixel.
    xcut = data.draw(st.integers(0, width))
    ycut = data.draw(st.integers(0, height))
    boxes = [(0, 0, xcut, ycut), (xcut, 0, width, ycut), (0, ycut, xcut, height), (xcut, ycut, width, height)]
    assert largest_empty_rectangle(np.array(boxes), width, height) is None
    hole_x = data.draw(st.integers(0, width - 1))
    hole_y = data.draw(st.integers(0, height - 1))
    rows = [(0, y, width, y + 1) for y in range(height) if y != hole_y]
    rows += [(0, hole_y, hole_x, hole_y + 1), (hole_x + 1, hole_y, width, hole_y + 1)]
    assert largest_empty_rectangle(np.array(rows), width, height) == (hole_x, hole_y, hole_x + 1, hole_y + 1)


def test_no_boxes_gives_whole_image():
    assert largest_empty_rectangle(np.zeros((0, 4), dtype=np.int64), 7, 5) == (0, 0, 7, 5)


def test_beats_the_border_sweep_heuristic():
    # Two 8x8 corner boxes on a 20x20 image. A sweep that only takes full-height / full-width strips
    # between the boxes' x- (or y-) extents finds the 4-px gaps x in [8, 12) or y in [8, 12).
    # The true optimum is a 12x12 square bounded by box edges on two sides: no 13-px side fits,
    # because any 13-wide interval overlaps x in [0, 8) or [12, 20) and the same holds for heights.
    boxes = np.array([[0, 0, 8, 8], [12, 12, 20, 20]])

    def sweep(lo: np.ndarray, hi: np.ndarray, size: int) -> int:
        covered = np.zeros(size, dtype=bool)
        for a, b in zip(lo, hi):
            covered[a:b] = True
        runs, run = [0], 0
        for c in covered:
            run = 0 if c else run + 1
            runs.append(run)
        return max(runs)

    heuristic = max(sweep(boxes[:, 0], boxes[:, 2], 20), sweep(boxes[:, 1], boxes[:, 3], 20))
    assert heuristic == 4
    rect = largest_empty_rectangle(boxes, 20, 20)
    # Two 12x12 optima, (8, 0, 20, 12) and (0, 8, 12, 20); the tie-break takes the smaller y0.
    assert rect == (8, 0, 20, 12)
    assert min(sides(rect)) == 12 > heuristic


def test_three_boxes_hand_computed():
    # 16x10 image. L = [0, 4) x [0, 7), TR = [10, 16) x [0, 3), B = [6, 16) x [8, 10).
    # Any x-range reaching a column < 4 has height <= 3 (L), any reaching column >= 10 has height
    # <= 5 (TR above, B below), so a side >= 6 needs x inside [4, 10): width 6, and B caps y at 8.
    # Best: [4, 10) x [0, 8), short side 6. The strip sweep only sees x in [4, 6) or y in [7, 8).
    boxes = np.array([[0, 0, 4, 7], [10, 0, 16, 3], [6, 8, 16, 10]])
    assert largest_empty_rectangle(boxes, 16, 10) == (4, 0, 10, 8)


def test_many_boxes_take_the_chunked_path(monkeypatch):
    import dejavu.data.crops as crops

    rng = np.random.default_rng(3)
    for _ in range(20):
        width, height = int(rng.integers(5, 13)), int(rng.integers(5, 13))
        xy0 = rng.integers(-1, 12, size=(12, 2))
        boxes = np.concatenate([xy0, xy0 + rng.integers(1, 4, size=(12, 2))], axis=1)
        expected = largest_empty_rectangle(boxes, width, height)
        # A tiny budget forces one x-pair per chunk; the answer must not depend on chunking.
        monkeypatch.setattr(crops, "_MAX_BROADCAST", 1)
        assert largest_empty_rectangle(boxes, width, height) == expected
        monkeypatch.setattr(crops, "_MAX_BROADCAST", 50_000_000)
        check_against_brute_force(boxes, width, height, coverage_mask(boxes, width, height))


def test_largest_empty_rectangle_rejects_bad_input():
    with pytest.raises(DataError):
        largest_empty_rectangle(np.array([[0, 0, 1]]), 4, 4)
    with pytest.raises(DataError):
        largest_empty_rectangle(np.array([[0.5, 0, 1, 1]]), 4, 4)
    with pytest.raises(DataError):
        largest_empty_rectangle(np.zeros((0, 4)), 0, 4)


# ---------------------------------------------------------------------------------------------
# boxes_to_pixels


def test_partial_pixels_round_outwards():
    pixels = boxes_to_pixels(np.array([[2.3, 1.0, 5.0, 3.7]]), 8, 8)
    assert pixels.dtype == np.int64
    assert pixels.tolist() == [[2, 1, 5, 4]]
    mask = coverage_mask(pixels, 8, 8)
    assert np.flatnonzero(mask.any(axis=0)).tolist() == [2, 3, 4]
    assert np.flatnonzero(mask.any(axis=1)).tolist() == [1, 2, 3]


def test_clipping_and_dropping():
    boxes = np.array(
        [
            [-3.5, -1.0, 2.2, 20.0],  # clipped on three sides
            [4.0, 4.0, 4.0, 6.0],  # zero width on a pixel edge: touches nothing
            [9.0, 1.0, 12.0, 3.0],  # entirely right of the image
            [5.0, 5.0, 3.0, 7.0],  # inverted
            [6.5, 7.5, 30.0, 8.0],  # runs off the right edge
        ]
    )
    assert boxes_to_pixels(boxes, 8, 8).tolist() == [[0, 0, 3, 8], [6, 7, 8, 8]]


def test_empty_input_shapes():
    for empty in (np.zeros((0, 4)), np.zeros((0, 4), dtype=np.int32), np.array([])):
        out = boxes_to_pixels(empty, 5, 5)
        assert out.shape == (0, 4) and out.dtype == np.int64


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 3)),
        np.zeros((4,)),
        np.zeros((1, 2, 4)),
        np.zeros((0, 3)),
        np.array([[0.0, np.nan, 1.0, 1.0]]),
        np.array([[0.0, 0.0, np.inf, 1.0]]),
        np.array([["a", "b", "c", "d"]]),
    ],
)
def test_boxes_to_pixels_rejects(bad):
    with pytest.raises(DataError):
        boxes_to_pixels(bad, 5, 5)


float_coord = st.floats(min_value=-3.0, max_value=15.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.lists(st.tuples(float_coord, float_coord, float_coord, float_coord), max_size=4),
)
def test_pixel_boxes_cover_exactly_the_touched_pixels(width, height, boxes):
    # Pixel (x, y) is the unit square [x, x+1) x [y, y+1); the box [bx0, bx1) x [by0, by1) touches it
    # iff bx0 < x + 1 and x < bx1 (same for y).
    raw = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    pixels = boxes_to_pixels(raw, width, height)
    assert pixels.dtype == np.int64 and pixels.ndim == 2 and pixels.shape[1] == 4
    assert (pixels[:, 0] < pixels[:, 2]).all() and (pixels[:, 1] < pixels[:, 3]).all()
    assert (pixels[:, :2] >= 0).all() and (pixels[:, 2] <= width).all() and (pixels[:, 3] <= height).all()
    xs = np.arange(width)[None, :]
    ys = np.arange(height)[:, None]
    expected = np.zeros((height, width), dtype=bool)
    for bx0, by0, bx1, by1 in raw.tolist():
        expected |= (bx0 < xs + 1) & (xs < bx1) & (by0 < ys + 1) & (ys < by1)
    assert np.array_equal(coverage_mask(pixels, width, height), expected)


# ---------------------------------------------------------------------------------------------
# centre_square


@pytest.mark.parametrize(
    "rect, square",
    [
        ((0, 0, 10, 4), (3, 0, 7, 4)),
        ((5, 2, 8, 9), (5, 4, 8, 7)),
        ((0, 0, 9, 4), (2, 0, 6, 4)),  # odd slack 5: 2 px left, 3 px right
        ((1, 1, 4, 8), (1, 3, 4, 6)),  # odd slack 4 -> even split
        ((2, 3, 4, 8), (2, 4, 4, 6)),  # odd slack 3: 1 px top, 2 px bottom
        ((3, 3, 6, 6), (3, 3, 6, 6)),  # already square
    ],
)
def test_centre_square_hand_computed(rect, square):
    assert centre_square(rect) == square


@settings(max_examples=200, deadline=None)
@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(1, 60), st.integers(1, 60))
def test_centre_square_properties(x0, y0, w, h):
    rect = (x0, y0, x0 + w, y0 + h)
    sx0, sy0, sx1, sy1 = centre_square(rect)
    assert sx1 - sx0 == sy1 - sy0 == min(w, h)
    assert x0 <= sx0 and sx1 <= x0 + w and y0 <= sy0 and sy1 <= y0 + h
    # Centred: the left/top margin is the smaller half of the slack, never more than 1 px off.
    assert (sx0 - x0) == (w - min(w, h)) // 2 and (sy0 - y0) == (h - min(w, h)) // 2


def test_centre_square_rejects_empty_rect():
    with pytest.raises(DataError):
        centre_square((3, 3, 3, 5))


# ---------------------------------------------------------------------------------------------
# periphery_crop


def test_threshold_boundary():
    # Best rectangle is (8, 0, 20, 12): short side 12.
    boxes = np.array([[0.0, 0.0, 8.0, 8.0], [12.0, 12.0, 20.0, 20.0]])
    kept = periphery_crop(boxes, 20, 20, min_side_px=12)
    assert kept == Crop(rect=(8, 0, 20, 12), square=(8, 0, 20, 12), short_side=12, reason="")
    skipped = periphery_crop(boxes, 20, 20, min_side_px=13)
    reason = "shortest side 12 px < min_side_px 13"
    assert skipped == Crop(rect=None, square=None, short_side=12, reason=reason)


def test_kept_crop_has_centre_square_of_rect():
    # A box across the top leaves a 20x6 strip below: square is centred horizontally.
    crop = periphery_crop(np.array([[0, 0, 20, 4]]), 20, 10, min_side_px=6)
    assert crop.rect == (0, 4, 20, 10)
    assert crop.square == (7, 4, 13, 10)
    assert crop.short_side == 6 and crop.reason == ""


def test_no_foreground_box():
    crop = periphery_crop(np.zeros((0, 4)), 20, 20, min_side_px=4)
    assert crop == Crop(rect=None, square=None, short_side=0, reason="no foreground box")
    outside = periphery_crop(np.array([[30.0, 30.0, 40.0, 40.0]]), 20, 20, min_side_px=4)
    assert outside.rect is None and outside.reason.startswith("no foreground box")


def test_no_box_free_area():
    crop = periphery_crop(np.array([[-1.0, -1.0, 25.0, 25.0]]), 20, 20, min_side_px=1)
    assert crop == Crop(rect=None, square=None, short_side=0, reason="no box-free area")


def test_float_boxes_are_rounded_outwards_before_the_search():
    # The box reaches 3.2 px from the left: column 3 counts as foreground, so 16 columns remain.
    crop = periphery_crop(np.array([[0.0, 0.0, 3.2, 20.0]]), 20, 20, min_side_px=16)
    assert crop.rect == (4, 0, 20, 20) and crop.short_side == 16
    assert periphery_crop(np.array([[0.0, 0.0, 3.2, 20.0]]), 20, 20, min_side_px=17).rect is None


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_min_side_px_must_be_positive_int(bad):
    with pytest.raises(DataError):
        periphery_crop(np.array([[0, 0, 1, 1]]), 4, 4, min_side_px=bad)


@settings(max_examples=100, deadline=None)
@given(scene(max_boxes=4), st.integers(1, 13))
def test_periphery_crop_agrees_with_brute_force(case, min_side_px):
    width, height, raw = case
    crop = periphery_crop(raw, width, height, min_side_px)
    mask = coverage_mask(raw, width, height)
    best_side, _, best_rect = brute_force(mask)
    if not mask.any():
        # Zero boxes, or boxes that cover no pixel: nothing to infer.
        assert crop.rect is None and crop.reason.startswith("no foreground box")
    elif best_rect is None:
        assert crop == Crop(None, None, 0, "no box-free area")
    elif best_side >= min_side_px:
        assert crop == Crop(best_rect, centre_square(best_rect), best_side, "")
    else:
        assert crop.rect is None and crop.square is None
        assert crop.short_side == best_side
        assert crop.reason == f"shortest side {best_side} px < min_side_px {min_side_px}"
