"""The attack's kNN, vote and confidence, and the metrics, against independent references.

References are deliberately naive (float64 brute force, Python loops, hand-written formulas) so that
they share no logic with the vectorised code under test.
"""

from __future__ import annotations

import doctest
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import comb

import dejavu.attack.neighbours as neighbours_module
import dejavu.attack.vote as vote_module
import dejavu.metrics.partition as partition_module
import dejavu.metrics.population as population_module
import dejavu.metrics.stats as stats_module
from dejavu.attack.neighbours import knn, knn_faiss, knn_torch
from dejavu.attack.vote import confidence, top_predictions, vote
from dejavu.metrics.partition import PARTS, partition_labels, partition_shares
from dejavu.metrics.population import accuracy_curve
from dejavu.metrics.stats import bootstrap_gap_ci, mcnemar_exact

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# kNN


def brute_force_knn(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared L2 in float64 by explicit differences, full sort per row."""
    q = queries.astype(np.float64)
    x = database.astype(np.float64)
    d = ((q[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


def random_data(seed: int, n_queries: int = 40, n_database: int = 200, dim: int = 16):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_queries, dim)).astype(np.float32),
            rng.standard_normal((n_database, dim)).astype(np.float32))


def assert_matches_reference(got, queries, database, k):
    dist, idx = got
    ref_d, ref_i = brute_force_knn(queries, database, k)
    assert dist.shape == (len(queries), k) and idx.shape == (len(queries), k)
    assert idx.dtype == np.int64
    # Continuous random data: no ties, so the neighbour set and even its order are unique.
    assert np.array_equal(np.sort(idx, axis=1), np.sort(ref_i, axis=1))
    assert np.array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(dist, axis=1) >= 0), "distances must be ascending"


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("k", [1, 7, 50])
def test_knn_matches_brute_force(backend, k):
    queries, database = random_data(seed=k)
    assert_matches_reference(knn(queries, database, k, backend=backend), queries, database, k)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_knn_k_equals_database_size(backend):
    queries, database = random_data(seed=3, n_queries=12, n_database=25, dim=5)
    dist, idx = knn(queries, database, len(database), backend=backend)
    assert_matches_reference((dist, idx), queries, database, len(database))
    assert all(sorted(row) == list(range(len(database))) for row in idx.tolist())


def test_knn_torch_chunks_and_float64_input():
    """Several query chunks (incl. a ragged last one) and float64 inputs give the same answer."""
    queries, database = random_data(seed=11, n_queries=23, n_database=60, dim=6)
    got = knn_torch(queries.astype(np.float64), database.astype(np.float64), 9, chunk=5, device="cpu")
    assert_matches_reference(got, queries, database, 9)


def test_knn_backends_agree_with_each_other():
    queries, database = random_data(seed=5, n_queries=100, n_database=400, dim=32)
    f_d, f_i = knn_faiss(queries, database, 20)
    t_d, t_i = knn_torch(queries, database, 20, device="cpu")
    assert np.array_equal(f_i, t_i)
    np.testing.assert_allclose(f_d, t_d, rtol=1e-4, atol=1e-4)


def test_knn_doctest_example():
    dist, idx = knn(np.eye(3, dtype="f4"), np.eye(3, dtype="f4"), k=1)
    assert idx.ravel().tolist() == [0, 1, 2]
    np.testing.assert_allclose(dist.ravel(), [0.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_knn_rejects_k_larger_than_database(backend):
    queries, database = random_data(seed=0, n_queries=3, n_database=4, dim=2)
    with pytest.raises(ValueError, match="exceeds the database size"):
        knn(queries, database, 5, backend=backend)


def test_knn_rejects_unknown_backend():
    queries, database = random_data(seed=0, n_queries=3, n_database=4, dim=2)
    with pytest.raises(ValueError, match="unknown kNN backend"):
        knn(queries, database, 2, backend="annoy")


@pytest.mark.parametrize(
    "module", [neighbours_module, vote_module, partition_module, population_module, stats_module]
)
def test_module_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------------
# Vote, top predictions, confidence


def loop_vote(neighbour_labels: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.zeros((len(neighbour_labels), n_classes), dtype=np.int64)
    for i, row in enumerate(neighbour_labels.tolist()):
        for label in row:
            counts[i, label] += 1
    return counts


@pytest.mark.parametrize("n_classes,k", [(2, 1), (5, 7), (100, 100)])
def test_vote_matches_loop(n_classes, k):
    rng = np.random.default_rng(n_classes * 1000 + k)
    labels = rng.integers(0, n_classes, size=(300, k))
    counts = vote(labels, n_classes)
    assert counts.shape == (300, n_classes)
    assert np.array_equal(counts, loop_vote(labels, n_classes))
    assert np.all(counts.sum(axis=1) == k)


def test_vote_highest_class_and_int32_input():
    labels = np.array([[9, 9, 0], [0, 1, 9]], dtype=np.int32)
    assert vote(labels, 10).tolist() == [[1] + [0] * 8 + [2], [1, 1] + [0] * 7 + [1]]


def test_top_predictions_ties_go_to_smaller_label():
    counts = np.array([
        [1, 3, 3, 0, 3],  # three-way tie at the top -> 1, 2, 4, then 0, 3
        [2, 2, 2, 2, 2],  # all tied -> label order
        [0, 0, 5, 0, 0],
    ])
    assert top_predictions(counts, 5).tolist() == [[1, 2, 4, 0, 3], [0, 1, 2, 3, 4], [2, 0, 1, 3, 4]]
    assert top_predictions(counts, 1).ravel().tolist() == [1, 0, 2]
    assert top_predictions(counts[:, :3], 5).shape == (3, 3)  # top clipped to the number of classes


def test_top_predictions_matches_loop_on_random_votes():
    rng = np.random.default_rng(7)
    counts = vote(rng.integers(0, 6, size=(200, 10)), 6)
    got = top_predictions(counts, 3)
    for row, top in zip(counts.tolist(), got.tolist()):
        expected = sorted(range(6), key=lambda c: (-row[c], c))[:3]
        assert top == expected


def hand_confidence(row: list[int]) -> float:
    total = sum(row)
    return sum((c / total) * math.log(c / total) for c in row if c > 0)


def test_confidence_is_minus_entropy():
    counts = np.array([[4, 0, 0, 0], [2, 2, 0, 0], [1, 1, 1, 1], [3, 1, 0, 0]])
    got = confidence(counts)
    np.testing.assert_allclose(got, [0.0, -math.log(2), -math.log(4), 0.75 * math.log(0.75) + 0.25 * math.log(0.25)],
                               atol=1e-12)
    np.testing.assert_allclose(got, [hand_confidence(r) for r in counts.tolist()], atol=1e-12)
    assert confidence(np.array([[4, 0]])).tolist() == [0.0]
    np.testing.assert_allclose(confidence(np.array([[2, 2]])), [-math.log(2)])


def test_confidence_random_votes_and_unanimous_is_maximal():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 8, size=(500, 20))
    labels[:50] = labels[:50, :1]  # 50 unanimous rows
    counts = vote(labels, 8)
    conf = confidence(counts)
    np.testing.assert_allclose(conf, [hand_confidence(r) for r in counts.tolist()], atol=1e-12)
    assert np.all(conf[:50] == 0.0)
    assert np.all(conf[50:] < 0.0) and np.all(conf <= 0.0)
    assert conf.argmax() < 50


# ---------------------------------------------------------------------------------------------
# Accuracy curve, partition


def loop_accuracy_curve(correct, conf, fractions):
    """Hand loop: take every crop strictly above the cut's confidence, and the tied block at the cut
    with weight (slots left) / (block size)."""
    out = []
    for f in fractions:
        m = max(1, math.ceil(round(f * len(conf), 9)))
        cut = sorted(conf, reverse=True)[m - 1]
        above = [c for c, v in zip(correct, conf) if v > cut]
        tied = [c for c, v in zip(correct, conf) if v == cut]
        out.append((sum(above) + sum(tied) * (m - len(above)) / len(tied)) / m)
    return out


def test_accuracy_curve_does_not_let_id_order_break_ties():
    # Four crops tie at the top; the cut at 50 % takes two of them. Reordering the rows must not matter.
    correct = np.array([1, 1, 0, 0, 0, 0, 0, 0], bool)
    conf = np.array([0.0, 0.0, 0.0, 0.0, -1, -1, -1, -1])
    assert accuracy_curve(correct, conf, np.array([0.25]))[0] == pytest.approx(0.5)
    assert accuracy_curve(correct[::-1], conf[::-1], np.array([0.25]))[0] == pytest.approx(0.5)


@pytest.mark.parametrize("n", [1, 7, 20, 333])
def test_accuracy_curve_matches_loop(n):
    rng = np.random.default_rng(n)
    correct = rng.random(n) < 0.4
    conf = -rng.integers(0, 5, n) / 2.0  # many ties: the cut falls inside tied blocks
    fractions = population_module.FRACTIONS
    np.testing.assert_allclose(accuracy_curve(correct, conf, fractions),
                               loop_accuracy_curve(correct.tolist(), conf.tolist(), fractions.tolist()), atol=1e-12)
    assert accuracy_curve(correct, conf)[-1] == pytest.approx(correct.mean())


def test_accuracy_curve_empty_is_nan():
    assert np.isnan(accuracy_curve(np.array([], bool), np.array([]))).all()


def test_partition_shares_match_hand_counts():
    rng = np.random.default_rng(4)
    t = rng.random(1000) < 0.6
    r = rng.random(1000) < 0.5
    shares = partition_shares(t, r)
    expected = {
        "memorized": sum(a and not b for a, b in zip(t, r)) / 1000,
        "correlated": sum(a and b for a, b in zip(t, r)) / 1000,
        "misrepresented": sum(b and not a for a, b in zip(t, r)) / 1000,
        "unassociated": sum(not a and not b for a, b in zip(t, r)) / 1000,
    }
    assert set(shares) == set(PARTS)
    for part in PARTS:
        assert shares[part] == pytest.approx(expected[part])
    assert sum(shares.values()) == pytest.approx(1.0)
    labels = partition_labels(t, r)
    for a, b, label in zip(t[:50], r[:50], labels[:50]):
        assert label == {(True, False): "memorized", (True, True): "correlated",
                         (False, True): "misrepresented", (False, False): "unassociated"}[(bool(a), bool(b))]


# ---------------------------------------------------------------------------------------------
# McNemar, bootstrap


def hand_mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact: 2 * P(X <= min(b, c)) for X ~ Bin(b + c, 1/2), capped at 1."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i, exact=True) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def pairs_with_discordance(b: int, c: int, concordant: int = 13) -> tuple[np.ndarray, np.ndarray]:
    t = np.array([True] * b + [False] * c + [True] * concordant + [False] * concordant)
    r = np.array([False] * b + [True] * c + [True] * concordant + [False] * concordant)
    return t, r


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (0, 5), (5, 5), (10, 2), (2, 10), (7, 3), (40, 25), (1, 1)])
def test_mcnemar_exact_matches_binomial_sum(b, c):
    t, r = pairs_with_discordance(b, c)
    test = mcnemar_exact(t, r)
    assert (test.b, test.c) == (b, c)
    assert test.p_value == pytest.approx(hand_mcnemar_p(b, c), rel=1e-9, abs=1e-15)


def test_bootstrap_gap_ci_covers_true_gap_and_narrows_with_n():
    rng = np.random.default_rng(2)
    true_gap = 0.10

    def sample(n):
        r = rng.random(n) < 0.40
        t = rng.random(n) < 0.50
        return t, r

    t_big, r_big = sample(20000)
    lo, hi = bootstrap_gap_ci([(t_big, r_big)], n_resamples=400, seed=0)
    assert lo < true_gap < hi
    observed = t_big.mean() - r_big.mean()
    assert lo < observed < hi
    small_lo, small_hi = bootstrap_gap_ci([sample(500)], n_resamples=400, seed=0)
    assert (small_hi - small_lo) > 2 * (hi - lo)  # width ~ 1/sqrt(n): ratio ~ sqrt(40) ~ 6


def test_bootstrap_gap_ci_pools_directions_and_is_reproducible():
    t1 = np.array([1, 1, 0, 1] * 50, bool)
    r1 = np.array([0, 1, 0, 1] * 50, bool)  # gap 0.25
    t2 = np.array([1, 0] * 100, bool)
    r2 = np.array([1, 0] * 100, bool)  # gap 0 exactly, no variance
    lo, hi = bootstrap_gap_ci([(t1, r1), (t2, r2)], n_resamples=300, seed=3)
    assert lo < 0.125 < hi and hi < 0.25  # the mean over directions, not the pooled examples
    assert bootstrap_gap_ci([(t1, r1), (t2, r2)], n_resamples=300, seed=3) == (lo, hi)
    assert all(math.isnan(v) for v in bootstrap_gap_ci([(np.array([], bool), np.array([], bool))]))


# ---------------------------------------------------------------------------------------------
# The benchmark script, at tiny size


def test_benchmark_script_runs_at_tiny_size():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attack.py"), "--queries", "50", "--public", "300", "--dim", "8",
         "--k", "5", "--repeats", "1", "--metrics-examples", "500"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| method | median s | min s | queries/s | ratio to faiss |" in proc.stdout
    assert "knn(backend=\"faiss\")" in proc.stdout and "knn_torch" in proc.stdout and "metrics" in proc.stdout
    assert "numpy reference" not in proc.stdout  # (d) only with --with-numpy
