"""Periphery crops against an exhaustive brute force on small images."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dejavu.data.crops as crops_module
from dejavu.data.crops import (
    Crop,
    boxes_to_pixels,
    centre_square,
    corner_crop,
    largest_empty_rectangle,
    paper_periphery_rect,
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


# ---------------------------------------------------------------------------------------------
# paper_periphery_rect (the rule of Meehan et al. 2023)


def paper_candidates(boxes: np.ndarray, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Every candidate of the paper's rule, in plain Python from its description.

    Boxes are clipped to the image and empty ones dropped first. The x-axis is cut at 0, W and every
    box's x-edges; for each pair of consecutive cuts [a, b), the boxes with bx0 < b and a < bx1 have
    their y-intervals merged, and each gap between them (or against 0 and H) is a candidate.
    """
    clipped = []
    for bx0, by0, bx1, by1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4).tolist():
        bx0, bx1 = min(max(bx0, 0), width), min(max(bx1, 0), width)
        by0, by1 = min(max(by0, 0), height), min(max(by1, 0), height)
        if bx0 < bx1 and by0 < by1:
            clipped.append((bx0, by0, bx1, by1))
    cuts = sorted({0, width} | {b[0] for b in clipped} | {b[2] for b in clipped})
    candidates = []
    for a, b in zip(cuts, cuts[1:]):
        spans = sorted((by0, by1) for bx0, by0, bx1, by1 in clipped if bx0 < b and a < bx1)
        merged: list[list[int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        edges = [0] + [v for span in merged for v in span] + [height]
        for gap_lo, gap_hi in zip(edges[::2], edges[1::2]):
            if gap_lo < gap_hi:
                candidates.append((a, gap_lo, b, gap_hi))
    return candidates


def paper_brute_force(boxes: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    candidates = paper_candidates(boxes, width, height)
    if not candidates:
        return None
    return min(candidates, key=lambda r: (-min(sides(r)), -sides(r)[0] * sides(r)[1], r[1], r[0], r[3], r[2]))


def test_paper_misses_the_strip_above_a_central_box():
    # 30x20 image, box [10, 20) x [12, 18). The paper's x-cuts are 0, 10, 20, 30: the intervals beside
    # the box give 10x20 columns (short side 10), the one above it 10x12. The optimum spans the cuts:
    # the full-width strip [0, 30) x [0, 12), short side 12.
    boxes = np.array([[10, 12, 20, 18]])
    assert paper_periphery_rect(boxes, 30, 20) == (0, 0, 10, 20)  # ties with (20, 0, 30, 20): smaller x0
    assert largest_empty_rectangle(boxes, 30, 20) == (0, 0, 30, 12)


def test_paper_two_corner_boxes():
    # 20x20, boxes [0, 8)^2 and [12, 20)^2. Cuts 0, 8, 12, 20: [0, 8) leaves y in [8, 20) (8x12),
    # [8, 12) the full height (4x20), [12, 20) leaves y in [0, 12) (8x12). Two 8x12 ties: smaller y0.
    # The optimum (8, 0, 20, 12) crosses the cut at x = 12 and has short side 12.
    boxes = np.array([[0, 0, 8, 8], [12, 12, 20, 20]])
    assert paper_periphery_rect(boxes, 20, 20) == (12, 0, 20, 12)
    assert largest_empty_rectangle(boxes, 20, 20) == (8, 0, 20, 12)


def test_paper_boxes_touching_the_border():
    # Top-left box [0, 6) x [0, 4) on 16x10: [0, 6) leaves 6x6 below it, [6, 16) is free (10x10).
    assert paper_periphery_rect(np.array([[0, 0, 6, 4]]), 16, 10) == (6, 0, 16, 10)
    # A full-height box on the right border: its interval has no gap at all.
    assert paper_periphery_rect(np.array([[10, 0, 16, 10]]), 16, 10) == (0, 0, 10, 10)
    # Two full-width boxes touching at y = 5 merge into [2, 7): gaps [0, 2) and [7, 12), no 0-high gap.
    assert paper_periphery_rect(np.array([[0, 2, 12, 5], [0, 5, 12, 7]]), 12, 12) == (0, 7, 12, 12)
    # Boxes past the border are clipped first, as in largest_empty_rectangle.
    assert paper_periphery_rect(np.array([[-5, -5, 6, 4]]), 16, 10) == (6, 0, 16, 10)


def test_paper_no_boxes_and_full_cover():
    assert paper_periphery_rect(np.zeros((0, 4), dtype=np.int64), 7, 5) == (0, 0, 7, 5)
    assert paper_periphery_rect(np.array([[0, 0, 3, 3]]), 3, 3) is None
    with pytest.raises(DataError):
        paper_periphery_rect(np.array([[0.5, 0, 1, 1]]), 4, 4)


@settings(max_examples=300, deadline=None)
@given(scene(max_boxes=6))
def test_paper_rect_properties(case):
    width, height, raw = case
    mask = coverage_mask(raw, width, height)
    for boxes in (raw, boxes_to_pixels(raw, width, height)):
        rect = paper_periphery_rect(boxes, width, height)
        assert rect == paper_brute_force(boxes, width, height)
        optimal = largest_empty_rectangle(boxes, width, height)
        if rect is None:
            assert optimal is None and mask.all()
            continue
        x0, y0, x1, y1 = rect
        assert all(isinstance(v, int) for v in rect)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert not mask[y0:y1, x0:x1].any()
        assert optimal is not None and min(sides(rect)) <= min(sides(optimal))


def test_paper_many_boxes_against_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(10):
        xy0 = rng.integers(-2, 60, size=(50, 2))
        boxes = np.concatenate([xy0, xy0 + rng.integers(1, 8, size=(50, 2))], axis=1)
        assert paper_periphery_rect(boxes, 64, 48) == paper_brute_force(boxes, 64, 48)


# ---------------------------------------------------------------------------------------------
# periphery_crop(rule="paper")


def test_paper_rule_threshold_is_strict():
    # Paper rect (0, 0, 10, 20): short side 10; the optimum has 12 and passes the same threshold.
    boxes = np.array([[10.0, 12.0, 20.0, 18.0]])
    skipped = periphery_crop(boxes, 30, 20, min_side_px=10, rule="paper")
    reason = "shortest side 10 px <= min_side_px 10 (paper rule: strictly greater)"
    assert skipped == Crop(rect=None, square=None, short_side=10, reason=reason)
    kept = periphery_crop(boxes, 30, 20, min_side_px=9, rule="paper")
    assert kept == Crop(rect=(0, 0, 10, 20), square=(0, 5, 10, 15), short_side=10, reason="")
    assert periphery_crop(boxes, 30, 20, min_side_px=10).rect == (0, 0, 30, 12)


def test_paper_rule_skips_boxes_past_the_right_edge():
    # Boxes [0, 2)^2 and [10, x1) x [12, 18) on 30x20. With x1 = 30 (on the edge, not past it) the
    # cuts are 0, 2, 10, 30: [2, 10) gives 8x20 and [10, 30) the 20x12 gap above the box, short side 12.
    on_edge = np.array([[0.0, 0.0, 2.0, 2.0], [10.0, 12.0, 30.0, 18.0]])
    kept = periphery_crop(on_edge, 30, 20, min_side_px=4, rule="paper")
    assert kept.reason == "" and kept.rect == (10, 0, 30, 12)
    past = np.array([[0.0, 0.0, 2.0, 2.0], [10.0, 12.0, 30.5, 18.0]])
    crop = periphery_crop(past, 30, 20, min_side_px=4, rule="paper")
    assert crop == Crop(rect=None, square=None, short_side=0, reason="box extends past the right edge")
    # The optimal rule clips such a box instead; its strip [2, 30) x [0, 12) crosses the cut at x = 10.
    assert periphery_crop(past, 30, 20, min_side_px=4).rect == (2, 0, 30, 12)
    # Past the left, top or bottom edge is clipped by both rules: the paper only drops the right.
    spill = np.array([[-3.0, -3.0, 20.0, 25.0]])
    assert periphery_crop(spill, 30, 20, 4, rule="paper").rect == (20, 0, 30, 20)


def test_paper_rule_no_box_reasons():
    assert periphery_crop(np.zeros((0, 4)), 20, 20, 4, rule="paper").reason == "no foreground box"
    below = periphery_crop(np.array([[2.0, 30.0, 5.0, 40.0]]), 20, 20, 4, rule="paper")
    assert below.rect is None and below.reason.startswith("no foreground box")


@settings(max_examples=100, deadline=None)
@given(scene(max_boxes=4), st.integers(1, 13))
def test_paper_rule_agrees_with_brute_force(case, min_side_px):
    width, height, raw = case
    crop = periphery_crop(raw, width, height, min_side_px, rule="paper")
    mask = coverage_mask(raw, width, height)
    expected = paper_brute_force(raw, width, height)
    if raw.shape[0] and (raw[:, 2] > width).any():
        assert crop == Crop(None, None, 0, "box extends past the right edge")
    elif not mask.any():
        assert crop.rect is None and crop.reason.startswith("no foreground box")
    elif expected is None:
        assert crop == Crop(None, None, 0, "no box-free area")
    elif min(sides(expected)) > min_side_px:
        assert crop == Crop(expected, centre_square(expected), min(sides(expected)), "")
    else:
        assert crop.rect is None and crop.short_side == min(sides(expected))
        assert crop.reason.endswith("(paper rule: strictly greater)")


@pytest.mark.parametrize("bad", ["Paper", "largest", ""])
def test_unknown_rule_lists_the_valid_ones(bad):
    with pytest.raises(DataError, match="'optimal', 'paper'"):
        periphery_crop(np.array([[0, 0, 1, 1]]), 4, 4, min_side_px=1, rule=bad)


# ---------------------------------------------------------------------------------------------
# corner_crop


def test_corner_crop_lower_left_rectangle():
    crop = corner_crop(np.array([[40.0, 10.0, 90.0, 50.0]]), 100, 80, fraction=0.3)
    # 0.3 * 100 = 30 wide, 0.3 * 80 = 24 high, flush with the bottom-left corner: y from 80 - 24 = 56.
    expected = Crop(rect=(0, 56, 30, 80), square=(3, 56, 27, 80), short_side=24, reason="")
    assert crop == expected and crop.overlaps_box is False
    assert corner_crop(np.array([[40, 10, 90, 50]]), 100, 80).rect == (0, 56, 30, 80)  # 0.3 is the default
    assert corner_crop(np.array([[0, 0, 1, 1]]), 10, 6, fraction=1).rect == (0, 0, 10, 6)
    # round(0.01 * 10) = 0 is raised to one pixel.
    assert corner_crop(np.array([[0, 0, 1, 1]]), 10, 10, fraction=0.01).rect == (0, 9, 1, 10)


@pytest.mark.parametrize(
    "box, overlaps",
    [
        ((20.0, 50.0, 40.0, 60.0), True),  # reaches into x < 30 and y >= 56
        ((30.0, 56.0, 40.0, 80.0), False),  # touches the right edge x = 30 only (half-open)
        ((29.5, 70.0, 40.0, 75.0), True),  # covers part of column 29: rounded outwards
        ((0.0, 0.0, 100.0, 56.0), False),  # everything above the corner
        ((0.0, 0.0, 100.0, 80.0), True),  # the whole image
    ],
)
def test_corner_crop_overlap_flag(box, overlaps):
    crop = corner_crop(np.array([box]), 100, 80)
    assert crop.rect == (0, 56, 30, 80) and crop.reason == ""
    assert crop.overlaps_box is overlaps


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, float("nan"), True, "0.3", None])
def test_corner_crop_fraction_must_be_in_unit_interval(bad):
    with pytest.raises(DataError, match="fraction"):
        corner_crop(np.array([[0, 0, 1, 1]]), 10, 10, fraction=bad)


def test_corner_crop_skips_unboxed_images():
    crop = corner_crop(np.zeros((0, 4)), 100, 80)
    # The corner (30x24) is still defined, so short_side reports it; rect stays None as for any skip.
    assert crop == Crop(rect=None, square=None, short_side=24, reason="no foreground box")
    assert crop.overlaps_box is False
    outside = corner_crop(np.array([[120.0, 0.0, 130.0, 10.0]]), 100, 80)
    assert outside.rect is None and outside.reason.startswith("no foreground box")


@settings(max_examples=150, deadline=None)
@given(scene(max_boxes=4), st.floats(0.01, 1.0))
def test_corner_crop_overlap_matches_the_pixel_mask(case, fraction):
    width, height, raw = case
    crop = corner_crop(raw, width, height, fraction)
    mask = coverage_mask(raw, width, height)
    if not mask.any():
        assert crop.rect is None and crop.reason.startswith("no foreground box")
        return
    x0, y0, x1, y1 = crop.rect
    assert x0 == 0 and y1 == height and 1 <= x1 <= width and 0 <= y0 < height
    assert crop.square == centre_square(crop.rect) and crop.reason == ""
    assert crop.overlaps_box == bool(mask[y0:y1, x0:x1].any())


# ---------------------------------------------------------------------------------------------


def test_module_doctests():
    result = doctest.testmod(crops_module)
    assert result.attempted > 0 and result.failed == 0
