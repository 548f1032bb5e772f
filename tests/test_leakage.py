"""Leakage checks: duplicate search against brute force, reports on hand-computed cases."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.fft import dctn

from dejavu.data import leakage
from dejavu.data.leakage import (
    duplicate_keep_mask,
    exact_duplicate_pairs,
    file_sha256,
    hamming,
    leakage_checks,
    near_duplicate_pairs,
    perceptual_hash,
)
from dejavu.data.scenes import ScenesDataset
from dejavu.errors import DataError

# ---------------------------------------------------------------------------------------------
# Independent references: Python's own bit counting and every pair of hashes.


def popcount(value: int) -> int:
    return bin(int(value)).count("1")


def brute_force_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Every (i, j), i < j, compared with Python ints (shares no code with the module)."""
    values = [int(h) for h in hashes]
    pairs = [
        (i, j)
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if popcount(values[i] ^ values[j]) <= max_distance
    ]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


UINT64 = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def hash_sets(draw) -> np.ndarray:
    """Random hashes plus small bit flips of a few seeds (so near pairs exist), shuffled."""
    seeds = draw(st.lists(UINT64, min_size=1, max_size=4))
    values = draw(st.lists(UINT64, max_size=40))
    for _ in range(draw(st.integers(0, 40))):
        seed = draw(st.sampled_from(seeds))
        for bit in draw(st.lists(st.integers(0, 63), max_size=10)):
            seed ^= 1 << bit
        values.append(seed)
    values += seeds * draw(st.integers(1, 3))  # exact repeats too
    return np.array(draw(st.permutations(values)), dtype=np.uint64)


@settings(max_examples=150, deadline=None)
@given(hashes=hash_sets(), max_distance=st.integers(0, 8))
def test_near_duplicate_pairs_match_brute_force(hashes, max_distance):
    found = near_duplicate_pairs(hashes, max_distance)
    assert found.dtype == np.int64 and found.shape[1] == 2
    np.testing.assert_array_equal(found, brute_force_pairs(hashes, max_distance))


def test_near_duplicate_pairs_big_block_of_identical_hashes(monkeypatch):
    rng = np.random.default_rng(0)
    blank = np.zeros(150, dtype=np.uint64)  # e.g. blank images: one huge run in every block
    near_blank = np.array([1 << b for b in range(0, 64, 7)], dtype=np.uint64)
    # Equal low block but far apart elsewhere: many candidates that verification must reject.
    same_block = (rng.integers(0, 2**40, 60, dtype=np.uint64) << np.uint64(24)) | np.uint64(0xABCDEF)
    noise = rng.integers(0, 2**64 - 1, 100, dtype=np.uint64, endpoint=True)
    hashes = rng.permutation(np.concatenate([blank, near_blank, same_block, noise]))
    expected = brute_force_pairs(hashes, 3)
    assert len(expected) > 150 * 149 // 2
    np.testing.assert_array_equal(near_duplicate_pairs(hashes, 3), expected)
    # Tiny batches: runs split across batches must give the same answer.
    monkeypatch.setattr(leakage, "_CANDIDATES_PER_BATCH", 7)
    np.testing.assert_array_equal(near_duplicate_pairs(hashes, 3), expected)


def test_near_duplicate_pairs_edges_and_errors():
    assert near_duplicate_pairs(np.zeros(0, dtype=np.uint64), 4).shape == (0, 2)
    assert near_duplicate_pairs(np.zeros(1, dtype=np.uint64), 4).shape == (0, 2)
    top = np.array([2**63, 2**63 + 1, 3], dtype=np.uint64)
    np.testing.assert_array_equal(near_duplicate_pairs(top, 1), [[0, 1]])
    # Python ints from perceptual_hash (object array) and int64 columns are read as 64 bits.
    np.testing.assert_array_equal(near_duplicate_pairs(np.array([2**64 - 1, 2**64 - 2], dtype=object), 1), [[0, 1]])
    np.testing.assert_array_equal(near_duplicate_pairs(np.array([-1, -2], dtype=np.int64), 1), [[0, 1]])
    for bad in (-1, 16, 2.0, True):
        with pytest.raises(DataError, match="max_distance"):
            near_duplicate_pairs(top, bad)
    with pytest.raises(DataError, match="uint64"):
        near_duplicate_pairs(np.array([0.5, 1.5]), 2)


def test_hamming():
    a = np.array([0, 0b1011, 2**64 - 1, 2**63], dtype=np.uint64)
    b = np.array([0, 0b0001, 0, 0], dtype=np.uint64)
    np.testing.assert_array_equal(hamming(a, b), [0, 2, 64, 1])
    rng = np.random.default_rng(1)
    x, y = (rng.integers(0, 2**64 - 1, 200, dtype=np.uint64, endpoint=True) for _ in range(2))
    expected = [popcount(int(p) ^ int(q)) for p, q in zip(x, y)]
    np.testing.assert_array_equal(hamming(x, y), expected)
    np.testing.assert_array_equal(leakage._popcount(x ^ y), expected)  # numpy < 2.0 path


# ---------------------------------------------------------------------------------------------
# Exact duplicates and which copy to keep.


def test_exact_duplicate_pairs():
    keys = np.array(["h2", "h1", "h2", "h3", "h1", "h2"])
    np.testing.assert_array_equal(exact_duplicate_pairs(keys), [[0, 2], [0, 5], [1, 4], [2, 5]])
    assert exact_duplicate_pairs(np.array(["a", "b"])).shape == (0, 2)
    assert exact_duplicate_pairs(np.array([], dtype=str)).shape == (0, 2)
    assert exact_duplicate_pairs(np.array([], dtype=str)).dtype == np.int64


def test_duplicate_keep_mask_keeps_smallest_id_per_cluster():
    ids = np.array(["e", "b", "d", "a", "c", "f"])
    # e-b and b-d chain into one cluster {e, b, d} (keep b); c-a (given reversed) keeps a; f alone.
    pairs = np.array([[0, 1], [1, 2], [4, 3]])
    np.testing.assert_array_equal(duplicate_keep_mask(ids, pairs), [False, True, False, True, False, True])
    assert duplicate_keep_mask(ids, np.zeros((0, 2), dtype=np.int64)).all()
    assert duplicate_keep_mask(ids, np.array([])).all()
    # String order, not numeric: "10" < "9".
    np.testing.assert_array_equal(duplicate_keep_mask(np.array(["9", "10"]), np.array([[0, 1]])), [False, True])
    with pytest.raises(DataError, match="0..5"):
        duplicate_keep_mask(ids, np.array([[0, 6]]))
    with pytest.raises(DataError, match="shape"):
        duplicate_keep_mask(ids, np.array([0, 1, 2]))


# ---------------------------------------------------------------------------------------------
# The report.

ALL_ONES = 2**64 - 1
IDS = np.array(["a", "b", "c", "d", "e", "f", "g", "h"])
GROUPS = np.array(["A", "X", "A", "", "X", "T", "B", "B"])
CONTENT = np.array(["h1", "h1", "h1", "h1", "h2", "h3", "h4", "h5"])
PHASHES = np.array([0, 0, 0, 0, 0b1, 0b11, ALL_ONES, ALL_ONES ^ 1], dtype=np.uint64)


def test_leakage_checks_hand_computed():
    report = leakage_checks(IDS, GROUPS, CONTENT, PHASHES, max_distance=2, examples=4)
    json.dumps(report)  # JSON-ready: plain ints, strs, bools
    # a, b, c share h1: a-b and b-c cross A/X; a-c is inside A; d has no group.
    assert report["exact"] == {
        "pairs": 2, "by_groups": {"A&X": 2}, "examples": [["a", "A", "b", "X"], ["b", "X", "c", "A"]],
    }
    # Near pairs within 2 bits: a, b, c, d = 0, e = 1, f = 3, g-h differ by 1 bit. Dropped:
    # a-b, a-c, b-c (exact), b-e (both X), g-h (both B), every pair with d ("" group).
    # Left: a-e, c-e (A&X, 1 bit), a-f, c-f (A&T, 2 bits), b-f (T&X, 2 bits), e-f (T&X, 1 bit).
    near = report["near"]
    assert (near["max_distance"], near["enabled"], near["pairs"]) == (2, True, 6)
    assert near["by_groups"] == {"A&T": 2, "A&X": 2, "T&X": 2}
    # Examples take turns among group pairs: the first of each, then the second of each.
    assert near["examples"] == [
        ["a", "A", "e", "X", 1], ["a", "A", "f", "T", 2], ["b", "X", "f", "T", 2], ["c", "A", "e", "X", 1],
    ]
    assert report["ok"] is False


def test_leakage_checks_disabled_near_check_and_clean_sets():
    report = leakage_checks(IDS, GROUPS, CONTENT, PHASHES, max_distance=-1)
    assert report["near"] == {"max_distance": -1, "enabled": False, "pairs": 0, "by_groups": {}, "examples": []}
    assert report["exact"]["pairs"] == 2 and report["ok"] is False
    # Duplicates only inside a group or with ungrouped images: no leak.
    groups = np.array(["A", "A", "A", "", "X", "X", "B", "B"])
    clean = leakage_checks(IDS, groups, CONTENT, PHASHES, max_distance=0)
    assert clean["ok"] is True
    assert clean["exact"] == {"pairs": 0, "by_groups": {}, "examples": []}
    assert clean["near"]["pairs"] == 0 and clean["near"]["enabled"] is True
    # One bit more: e (X, hash 1) is a near copy of a, b, c (A, hash 0); e-f stays inside X.
    loose = leakage_checks(IDS, groups, CONTENT, PHASHES, max_distance=1)
    assert loose["near"]["by_groups"] == {"A&X": 3} and loose["exact"]["pairs"] == 0 and loose["ok"] is False
    assert leakage_checks(IDS, groups, CONTENT, PHASHES, max_distance=2, examples=0)["near"]["examples"] == []


def test_leakage_checks_rejects_bad_input():
    with pytest.raises(DataError, match="lengths"):
        leakage_checks(IDS[:3], GROUPS, CONTENT, PHASHES, max_distance=2)
    with pytest.raises(DataError, match="max_distance"):
        leakage_checks(IDS, GROUPS, CONTENT, PHASHES, max_distance=16)
    with pytest.raises(DataError, match="examples"):
        leakage_checks(IDS, GROUPS, CONTENT, PHASHES, max_distance=2, examples=-1)


# ---------------------------------------------------------------------------------------------
# Perceptual hash.


def reference_phash(image: np.ndarray) -> int:
    """The documented recipe, step by step, with scipy's dctn and np.median."""
    luma = image.astype(np.float64) @ [0.299, 0.587, 0.114] if image.ndim == 3 else image.astype(np.float64)
    thumb = Image.fromarray(luma.astype(np.float32)).resize((32, 32), Image.Resampling.LANCZOS)
    block = dctn(np.asarray(thumb, dtype=np.float64), type=2, norm="ortho")[:8, :8].ravel()
    block[np.abs(block) < 1e-3] = 0.0
    return sum(1 << i for i, bit in enumerate(block > np.median(block)) if bit)


def test_perceptual_hash_of_half_white_images():
    # Left half white: every row is the same step, so only DCT row 0 (no vertical frequency) is
    # non-zero. The step minus its mean is antisymmetric about the centre, so even horizontal
    # frequencies vanish; for odd k the sign is that of sum_{x<16} cos(pi (2x+1) k / 64)
    # = sin(pi k / 2) / (2 sin(pi k / 64)): + for k = 1, 5 and - for k = 3, 7. With the DC term,
    # 3 of 64 coefficients are positive, 2 negative, 59 zero: median 0, bits 0, 1 and 5.
    for width in (16, 64, 100):
        left = np.zeros((width, width), dtype=np.uint8)
        left[:, : width // 2] = 255
        assert perceptual_hash(left) == 0b100011
        # The same image turned a quarter: the pattern moves to column 0, bits 0, 8 and 40.
        assert perceptual_hash(np.ascontiguousarray(left.T)) == (1 << 0) | (1 << 8) | (1 << 40)
        # Swapping black and white negates every AC coefficient: bits 0 (DC), 3 and 7.
        assert perceptual_hash(255 - left) == 0b10001001


def test_perceptual_hash_of_constant_images():
    # Only the DC coefficient is non-zero; it exceeds the median (0) unless the image is black.
    assert perceptual_hash(np.full((20, 30, 3), 137, dtype=np.uint8)) == 1
    assert perceptual_hash(np.full((7, 5), 1, dtype=np.uint8)) == 1
    assert perceptual_hash(np.zeros((64, 64, 3), dtype=np.uint8)) == 0


def test_perceptual_hash_follows_the_documented_recipe():
    rng = np.random.default_rng(2)
    for shape in [(64, 64, 3), (37, 90, 3), (50, 20)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        assert perceptual_hash(image) == reference_phash(image)
    gray = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    assert perceptual_hash(np.repeat(gray[..., None], 3, axis=2)) == perceptual_hash(gray)


def test_perceptual_hash_rejects_bad_images():
    with pytest.raises(DataError, match="uint8"):
        perceptual_hash(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(DataError, match=r"\(8, 8, 4\)"):
        perceptual_hash(np.zeros((8, 8, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="1x1"):
        perceptual_hash(np.zeros((0, 8), dtype=np.uint8))


def _jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _shrink(image: np.ndarray, factor: float = 0.8) -> np.ndarray:
    height, width = image.shape[:2]
    size = (round(width * factor), round(height * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def test_perceptual_hash_is_robust_on_scenes_and_separates_different_images():
    dataset = ScenesDataset(n_classes=10, images_per_class=50, image_size=64, seed=0)
    images = [dataset.render(i)[0].image for i in range(0, 500, 5)]  # 10 per class
    hashes = np.array([perceptual_hash(image) for image in images], dtype=np.uint64)
    after_jpeg = hamming(hashes, np.array([perceptual_hash(_jpeg(image)) for image in images], dtype=np.uint64))
    after_resize = hamming(hashes, np.array([perceptual_hash(_shrink(image)) for image in images], dtype=np.uint64))
    # Measured: JPEG q75 moves 0/2/4/6 bits in 42/47/8/3 of these 100 images; a 0.8x resize 0/2
    # bits in 90/10. Bits flip in pairs (always 32 ones), and a 64 px image has little margin.
    assert np.all(after_resize <= 4)
    assert np.mean(after_jpeg <= 4) >= 0.9 and np.all(after_jpeg <= 8)
    distances = hamming(hashes[:, None], hashes[None, :])[np.triu_indices(len(hashes), k=1)]
    assert 28 <= distances.mean() <= 36  # unrelated images: about half the 64 bits differ
    assert np.mean(distances <= 8) < 0.01


# ---------------------------------------------------------------------------------------------
# Content hash.


def test_file_sha256_matches_hashlib(tmp_path):
    payload = np.random.default_rng(3).bytes(3 * 2**20 + 12345)  # several 1 MiB chunks
    path = tmp_path / "image.bin"
    path.write_bytes(payload)
    assert file_sha256(path) == hashlib.sha256(payload).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
    with pytest.raises(DataError, match="missing"):
        file_sha256(tmp_path / "missing")
