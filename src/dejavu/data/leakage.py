"""Leakage checks: no image, or near copy of one, may sit in two of the sets A, B, X, T.

The audit compares a target model trained on A with a reference trained on B and attacks them
with a public set X and a held-out set T. If the same picture (or a re-encoded, resized copy of
it; ImageNet is known to hold such near-duplicates) is in two of these sets, a model has
trained on an image the audit treats as unseen, and the memorization score is wrong. This module
finds such pairs before any training:

- exact duplicates: equal content hashes (``file_sha256`` of the file bytes, or any key);
- near duplicates: 64-bit DCT perceptual hashes (``perceptual_hash``) within a small Hamming
  distance, found by a pigeonhole block index so that 1.3M images do not need N^2 comparisons.

Pairs are always int64 (P, 2) arrays of positions ``(i, j)`` with ``i < j``, sorted
lexicographically; reports name images by id.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.fft import dct
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dejavu.errors import DataError

# Side of the grayscale thumbnail the DCT is taken of, and of the low-frequency block kept.
_THUMBNAIL = 32
_KEPT = 8
# The first 8 rows of the orthonormal 32-point DCT-II matrix: ``M @ x @ M.T`` is the top-left 8x8
# block of ``scipy.fft.dctn(x, norm="ortho")`` (the same numbers, checked in the tests), at a
# tenth of the cost, since only 64 of the 1024 coefficients are needed.
_DCT_ROWS = dct(np.eye(_THUMBNAIL), type=2, norm="ortho", axis=0)[:_KEPT]
# DCT coefficients (pixel values 0..255, orthonormal DCT) smaller than this are float rounding of
# a zero: a coefficient of 1e-3 is a wave of ~1e-4 grey levels, far below uint8 precision. Snapping
# them to 0 makes flat and symmetric images hash deterministically instead of by rounding noise.
_ROUNDING = 1e-3
# The largest distance the block index accepts: 16 blocks of 4 bits. Beyond that, blocks are so
# short that nearly every pair is a candidate, and a distance of 16+ bits is no longer "near".
MAX_DISTANCE = 15
# Candidate pairs are generated and verified this many at a time, so that a huge bucket (10^5
# blank images share every block) costs time but not memory (~100 MB per batch).
_CANDIDATES_PER_BATCH = 1 << 21


def file_sha256(path: Path) -> str:
    """Hex SHA-256 digest of a file's bytes, read in 1 MiB chunks (any file size, bounded memory).

    Example:
        >>> file_sha256(Path("empty.bin"))  # doctest: +SKIP
        'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"file_sha256: cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash (pHash) of a uint8 (H, W, 3) RGB or (H, W) grayscale image.

    Steps: ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` in float; resize to 32x32 with PIL's
    antialiased LANCZOS filter; 2-D DCT-II (as ``scipy.fft.dctn``, ``norm='ortho'``); keep the
    top-left 8x8 block (lowest frequencies, DC included); bit = coefficient > median of those 64.
    Bit i of the returned int is row-major position i of the block (row = vertical frequency).
    Coefficients below 1e-3 in magnitude are set to 0 first, so rounding noise cannot decide bits.
    Re-encoding as JPEG or resizing changes few bits; unrelated images differ in ~32.

    A constant image hashes to 1 (only the DC coefficient exceeds the median, 0), or 0 if black.

    Example:
        >>> image = np.zeros((16, 16), dtype=np.uint8); image[:, :8] = 255  # white left half
        >>> perceptual_hash(image)  # DCT row 0: DC, k=1 and k=5 positive, k=3, k=7 negative
        35
    """
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        raise DataError(f"perceptual_hash: expected a uint8 image, got dtype {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        luma = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif pixels.ndim == 2:
        luma = pixels.astype(np.float32)
    else:
        raise DataError(f"perceptual_hash: expected an image of shape (H, W, 3) or (H, W), got {pixels.shape}")
    if luma.size == 0:
        raise DataError(f"perceptual_hash: expected an image of at least 1x1 pixels, got shape {pixels.shape}")
    # A float32 array makes a mode "F" image: the luma stays in float through the resize: a uint8 thumbnail would round away the
    # small low-frequency differences the hash is made of.
    thumbnail = Image.fromarray(np.ascontiguousarray(luma)).resize(
        (_THUMBNAIL, _THUMBNAIL), Image.Resampling.LANCZOS
    )
    block = (_DCT_ROWS @ np.asarray(thumbnail, dtype=np.float64) @ _DCT_ROWS.T).ravel()
    block[np.abs(block) < _ROUNDING] = 0.0
    middle = np.partition(block, (31, 32))[31:33]
    bits = block > (middle[0] + middle[1]) / 2  # the median of 64 values
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (SWAR bit counting; numpy < 2.0 has no ``bitwise_count``)."""
    x = values - ((values >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    # The multiply sums the 8 byte counts into the top byte; overflow wraps, as intended.
    return ((x * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.int64)


def _bit_count(values: np.ndarray) -> np.ndarray:
    count = getattr(np, "bitwise_count", None)
    return count(values).astype(np.int64) if count is not None else _popcount(values)


def _as_hashes(hashes: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(hashes)
    if array.dtype == object:
        try:  # Python ints from perceptual_hash, up to 2**64 - 1
            array = np.array(array.tolist(), dtype=np.uint64)
        except (OverflowError, TypeError, ValueError):
            found = array[:3].tolist()
            raise DataError(f"{name}: expected 64-bit unsigned integer hashes, got values like {found}") from None
    if array.dtype.kind not in "ui" or array.dtype.itemsize > 8:
        raise DataError(f"{name}: expected uint64 hashes, got dtype {array.dtype}")
    # int64 is read as the same 64 bits (how uint64 hashes come back from an int64 column).
    return array.astype(np.uint64, copy=False)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise Hamming distance ``popcount(a ^ b)`` of uint64 hashes, as int64 (broadcasting).

    Example:
        >>> hamming(np.array([0b1011], dtype=np.uint64), np.array([0b0001], dtype=np.uint64))
        array([2])
    """
    return _bit_count(np.bitwise_xor(_as_hashes(a, "hamming"), _as_hashes(b, "hamming")))


def _check_distance(max_distance: int) -> int:
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise DataError(f"near_duplicate_pairs: max_distance must be an integer, got {max_distance!r}")
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise DataError(f"near_duplicate_pairs: max_distance must be in 0..{MAX_DISTANCE}, got {max_distance}")
    return int(max_distance)


def _runs(sorted_values: np.ndarray) -> np.ndarray:
    """For each position of a sorted array, the end (exclusive) of its run of equal values."""
    n = len(sorted_values)
    ends = np.append(np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1, n)
    starts = np.concatenate(([0], ends[:-1]))
    return np.repeat(ends, ends - starts)


def _pairs_after(positions: np.ndarray, partners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (p, p + 1), ..., (p, p + partners[p]) for each p in ``positions``, vectorised."""
    counts = partners[positions]
    left = np.repeat(positions, counts)
    # right = p + 1 + (rank of the pair among p's pairs) = arange - (first pair of p - p - 1)
    shift = np.cumsum(counts) - counts - positions - 1
    right = np.arange(len(left), dtype=positions.dtype) - np.repeat(shift.astype(positions.dtype), counts)
    return left, right


def _sorted_pairs(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """(P, 2) int64 of (min, max), sorted lexicographically; the callers never produce repeats."""
    low, high = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    codes = np.sort(low * max(n, 1) + high)
    return np.stack((codes // max(n, 1), codes % max(n, 1)), axis=1)


def _equal_pairs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i, j), unordered, of every pair with equal ``codes`` (any sortable dtype)."""
    order = np.argsort(codes, kind="stable")
    partners = _runs(codes[order]) - np.arange(len(codes)) - 1
    left, right = _pairs_after(np.flatnonzero(partners), partners)
    return order[left], order[right]


def _block_search(values: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i, j), each pair once, of distinct uint64 ``values`` within ``distance`` bits."""
    n = len(values)
    n_blocks = distance + 1
    widths = [64 // n_blocks + (b < 64 % n_blocks) for b in range(n_blocks)]
    shifts = np.cumsum([0] + widths[:-1]).tolist()
    masks = [np.uint64((1 << w) - 1) for w in widths]
    # Positions fit int32 up to 2**31 hashes; half the memory traffic of int64 in the hot loop.
    index_type = np.int32 if n < 2**31 - 1 else np.int64
    found_i, found_j = [np.zeros(0, dtype=index_type)], [np.zeros(0, dtype=index_type)]
    for block in range(n_blocks):
        keys = (values >> np.uint64(shifts[block])) & masks[block]
        order = np.argsort(keys, kind="stable").astype(index_type)
        # Work on sorted positions: the two hashes of a candidate lie close together in memory.
        ordered = values[order]
        partners = (_runs(keys[order]) - np.arange(n) - 1).astype(index_type)
        active = np.flatnonzero(partners).astype(index_type)
        if len(active) == 0:
            continue
        # Batches of whole positions; one position may exceed the budget, never more than N pairs.
        cumulative = np.cumsum(partners[active], dtype=np.int64)
        start = 0
        while start < len(active):
            before = cumulative[start - 1] if start else 0
            stop = max(int(np.searchsorted(cumulative, before + _CANDIDATES_PER_BATCH, side="right")), start + 1)
            left, right = _pairs_after(active[start:stop], partners)
            close = _bit_count(ordered[left] ^ ordered[right]) <= distance
            left, right = left[close], right[close]
            differences = ordered[left] ^ ordered[right]
            first = np.ones(len(left), dtype=bool)
            for earlier in range(block):  # the pair belongs to the first block it agrees on
                first &= ((differences >> np.uint64(shifts[earlier])) & masks[earlier]) != 0
            found_i.append(order[left[first]])
            found_j.append(order[right[first]])
            start = stop
    return np.concatenate(found_i), np.concatenate(found_j)


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """All pairs of hashes within ``max_distance`` bits of each other, without comparing all pairs.

    hashes: uint64 (N,) (other integer dtypes are read as their 64 bits); max_distance in 0..15.
    Returns int64 (P, 2) of positions (i, j), i < j, hamming(hashes[i], hashes[j]) <= max_distance,
    sorted lexicographically.

    Pigeonhole (the idea of multi-index hashing, Norouzi et al., CVPR 2012): cut the 64 bits into
    max_distance + 1 contiguous blocks; d <= max_distance differing bits cannot touch every block,
    so a near pair is equal on at least one block. Per block the hashes are sorted by block value
    and every pair inside a run of equal values is a candidate, which is then verified; a pair is
    kept only for the first block it agrees on, so none is reported twice. The search runs on the
    distinct hash values, and equal hashes (e.g. thousands of blank images) are expanded at the
    end, so they cost the size of the answer and no more. Cost ~ N log N plus the candidates,
    ~M^2 (max_distance + 1) / 2^(64 / (max_distance + 1)) / 2 for M distinct uniform hashes
    (1M hashes at max_distance 4: ~3e8 candidates, ~10 s), processed in bounded-memory batches.

    Example:
        >>> near_duplicate_pairs(np.array([0b0000, 0b0111, 0b0011], dtype=np.uint64), 1)
        array([[1, 2]])
    """
    distance = _check_distance(max_distance)
    values = _as_hashes(hashes, "near_duplicate_pairs")
    if values.ndim != 1:
        raise DataError(f"near_duplicate_pairs: expected hashes of shape (N,), got {values.shape}")
    distinct, inverse = np.unique(values, return_inverse=True)
    found_i, found_j = _block_search(distinct, distance)
    # Expand each pair of distinct values (a, b) to every image with value a times every image
    # with value b: pair t of that product is (members of a)[t // count_b], (members of b)[t % count_b].
    counts = np.bincount(inverse, minlength=len(distinct))
    members = np.argsort(inverse, kind="stable")
    firsts = np.cumsum(counts) - counts
    totals = counts[found_i] * counts[found_j]
    pair = np.repeat(np.arange(len(totals)), totals)
    rank = np.arange(len(pair)) - np.repeat(np.cumsum(totals) - totals, totals)
    across_b = counts[found_j][pair]
    across_i = members[firsts[found_i][pair] + rank // across_b]
    across_j = members[firsts[found_j][pair] + rank % across_b]
    equal_i, equal_j = _equal_pairs(inverse)
    return _sorted_pairs(np.concatenate((equal_i, across_i)), np.concatenate((equal_j, across_j)), len(values))


def exact_duplicate_pairs(keys: np.ndarray) -> np.ndarray:
    """All pairs of positions with equal keys (e.g. sha256 hex strings), int64 (P, 2), i < j, sorted.

    Quadratic only in the size of each group of equal keys (that many pairs is the answer itself).

    Example:
        >>> exact_duplicate_pairs(np.array(["x", "y", "x", "x"]))
        array([[0, 2],
               [0, 3],
               [2, 3]])
    """
    array = np.asarray(keys)
    if array.ndim != 1:
        raise DataError(f"exact_duplicate_pairs: expected keys of shape (N,), got {array.shape}")
    return _sorted_pairs(*_equal_pairs(array), len(array))


def _check_columns(name: str, **columns: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {key: np.asarray(value) for key, value in columns.items()}
    for key, array in arrays.items():
        if array.ndim != 1:
            raise DataError(f"{name}: expected {key} of shape (N,), got {array.shape}")
    lengths = {key: len(array) for key, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{name}: expected columns of one length N, got lengths {lengths}")
    return arrays


def _cross_group_summary(
    pairs: np.ndarray, ids: np.ndarray, groups: np.ndarray, examples: int, distances: np.ndarray | None
) -> dict:
    """Counts per group pair and examples of the pairs whose two images are in different groups."""
    names, codes = np.unique(groups, return_inverse=True)
    first, second = codes[pairs[:, 0]], codes[pairs[:, 1]]
    cross = first != second
    pairs, first, second = pairs[cross], first[cross], second[cross]
    distances = distances[cross] if distances is not None else None
    # names are sorted, so (min code, max code) is the sorted pair of group names.
    pair_codes = np.minimum(first, second) * len(names) + np.maximum(first, second)
    kinds, counts = np.unique(pair_codes, return_counts=True)
    by_groups = {f"{names[k // len(names)]}&{names[k % len(names)]}": int(c) for k, c in zip(kinds, counts)}
    # Examples take turns among group pairs, so that a rare leak (B&T) shows next to a common one.
    order = np.argsort(pair_codes, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    chosen = np.lexsort((np.arange(len(rank)), rank))[:examples]
    rows = []
    for index in chosen.tolist():
        i, j = pairs[index].tolist()
        row = [str(ids[i]), str(groups[i]), str(ids[j]), str(groups[j])]
        rows.append(row + [int(distances[index])] if distances is not None else row)
    return {"pairs": int(len(pairs)), "by_groups": by_groups, "examples": rows}


def leakage_checks(
    ids: np.ndarray,
    groups: np.ndarray,
    content_hashes: np.ndarray,
    perceptual_hashes: np.ndarray,
    max_distance: int,
    examples: int = 20,
) -> dict:
    """Exact and near duplicates shared by two different groups (sets), as a JSON-ready report.

    ids, groups, content_hashes: str (N,); perceptual_hashes: uint64 (N,). Images whose group is ""
    are in no set and are ignored. A pair inside one group is no leak and is not counted. A pair
    with equal content hashes is counted under "exact" only, even if it is also a near pair.
    max_distance < 0 disables the near-duplicate check; otherwise it must be in 0..15.
    Group pairs are named by the two group names, sorted, joined with "&". ``examples`` rows
    (at most that many, taking turns among group pairs) name the two images and their groups,
    plus the Hamming distance for near pairs. ``ok`` is True iff no cross-group pair was found.

    Example:
        >>> report = leakage_checks(np.array(["a", "b", "c"]), np.array(["A", "X", "X"]),
        ...     np.array(["h1", "h1", "h2"]), np.array([0, 0, 1], dtype=np.uint64), max_distance=-1)
        >>> report["exact"], report["ok"]
        ({'pairs': 1, 'by_groups': {'A&X': 1}, 'examples': [['a', 'A', 'b', 'X']]}, False)
    """
    columns = _check_columns(
        "leakage_checks", ids=ids, groups=groups, content_hashes=content_hashes, perceptual_hashes=perceptual_hashes
    )
    if isinstance(examples, bool) or not isinstance(examples, (int, np.integer)) or examples < 0:
        raise DataError(f"leakage_checks: examples must be a non-negative integer, got {examples!r}")
    member = np.flatnonzero(columns["groups"].astype(str) != "")
    ids = columns["ids"][member]
    groups = columns["groups"][member].astype(str)
    content = columns["content_hashes"][member]

    exact = _cross_group_summary(exact_duplicate_pairs(content), ids, groups, examples, None)
    if max_distance < 0:
        near = {"pairs": 0, "by_groups": {}, "examples": []}
    else:
        phashes = _as_hashes(columns["perceptual_hashes"], "leakage_checks")[member]
        pairs = near_duplicate_pairs(phashes, max_distance)
        pairs = pairs[content[pairs[:, 0]] != content[pairs[:, 1]]]
        distances = hamming(phashes[pairs[:, 0]], phashes[pairs[:, 1]])
        near = _cross_group_summary(pairs, ids, groups, examples, distances)
    near = {"max_distance": int(max_distance), "enabled": bool(max_distance >= 0), **near}
    return {"exact": exact, "near": near, "ok": exact["pairs"] == 0 and near["pairs"] == 0}


def duplicate_keep_mask(ids: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """bool (N,): which images to keep so that no two duplicates remain (before splitting).

    Duplicates form clusters: the connected components of the graph whose edges are ``pairs``
    (int (P, 2) positions; a-b and b-c make one cluster {a, b, c} even if a and c differ more).
    Each cluster keeps its member with the smallest id in string order (ties by position), so the
    choice does not depend on the order of the table; an image in no pair is always kept.

    Example:
        >>> duplicate_keep_mask(np.array(["c", "b", "a", "d"]), np.array([[0, 1], [1, 2]]))
        array([False, False,  True,  True])
    """
    names = np.asarray(ids)
    if names.ndim != 1:
        raise DataError(f"duplicate_keep_mask: expected ids of shape (N,), got {names.shape}")
    n = len(names)
    edges = np.asarray(pairs)
    if edges.shape == (0,):
        edges = np.zeros((0, 2), dtype=np.int64)
    if edges.ndim != 2 or edges.shape[1] != 2 or (edges.size and edges.dtype.kind not in "iu"):
        raise DataError(f"duplicate_keep_mask: expected integer pairs of shape (P, 2), got {edges.shape} {edges.dtype}")
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise DataError(f"duplicate_keep_mask: pair positions must be in 0..{n - 1}, got {edges.min()}..{edges.max()}")
    edges = edges.astype(np.int64)
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, cluster = connected_components(graph, directed=False)
    # Sort by (cluster, id rank); the first of each cluster is its smallest id.
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(names.astype(str), kind="stable")] = np.arange(n)
    order = np.lexsort((rank, cluster))
    first = np.ones(n, dtype=bool)
    first[1:] = cluster[order][1:] != cluster[order][:-1]
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    return keep
