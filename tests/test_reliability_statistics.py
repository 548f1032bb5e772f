"""Issue 12, item 8: statistics conventions. Tied votes count fractionally (the expected value under a
uniformly random tie-break), a class with no vote is never predicted, the partition and McNemar follow
from the fractional correctness, embeddings are float32 by default and refused when not finite, and
DINO's teacher-temperature warm-up follows DINO's schedule (tests/test_losses.py)."""

import csv
import itertools
import json
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from dejavu.attack.vote import expected_correct, vote, voted_top
from dejavu.config import load_config
from dejavu.data.records import ImageTable
from dejavu.errors import ModelError
from dejavu.metrics.partition import PARTS, part_probabilities, partition_labels, partition_shares
from dejavu.metrics.population import accuracy_curve
from dejavu.metrics.stats import bootstrap_gap_ci, mcnemar_exact
from dejavu.metrics.tables import canary_summary, direction_summary, direction_table, per_class
from dejavu.runs import Run, load_npz
from dejavu.stages import fingerprints, run_all
from dejavu.stages.attack import EMBED, stored_embeddings
from tests.conftest import TINY


def brute_correct(counts: list[int], label: int, top: int) -> Fraction:
    """Exact probability over every tie-break: each order of the classes tied with ``label`` (the only
    ties that can move it across the cut) equally likely; the voted classes sorted by (-count, that
    order, then label), is ``label`` among the first ``top``?"""
    if counts[label] == 0:
        return Fraction(0)  # only voted classes are sorted in: a label without a vote is never among them
    tied = [c for c in range(len(counts)) if counts[c] == counts[label]]
    hits = total = 0
    for order in itertools.permutations(tied):
        rank = {c: i for i, c in enumerate(order)}
        voted = sorted((c for c in range(len(counts)) if counts[c] > 0), key=lambda c: (-counts[c], rank.get(c, 0), c))
        hits += label in voted[:top]
        total += 1
    return Fraction(hits, total)


# Fractional top-1 / top-5 correctness ---------------------------------------------------------------
def test_a_two_way_tie_at_the_top_counts_half_at_top1_and_whole_at_top5():
    counts = np.array([[3, 3, 0, 0, 0, 0, 0, 0, 0, 0]])
    # g = 0 classes above the true label 0, e = 2 tied with it: top-1 (1 - 0) / 2; top-5 2 <= 5 -> 1.
    assert expected_correct(counts, np.array([0]), 1).tolist() == [0.5]
    assert expected_correct(counts, np.array([1]), 1).tolist() == [0.5]
    assert expected_correct(counts, np.array([0]), 5).tolist() == [1.0]


def test_a_class_with_no_vote_is_never_predicted():
    # Only classes 0 and 1 were voted; the true label 2 had no vote. The old top-5 filled the list with
    # the lowest unvoted labels (2, 3, 4) and counted this crop correct.
    counts = np.array([[4, 1, 0, 0, 0, 0, 0, 0, 0, 0]])
    assert expected_correct(counts, np.array([2]), 5).tolist() == [0.0]
    assert expected_correct(counts, np.array([2]), 1).tolist() == [0.0]
    # Even when all classes fit in the top 5: no vote, no prediction.
    assert expected_correct(np.array([[5, 0, 0]]), np.array([1]), 5).tolist() == [0.0]
    assert voted_top(counts, 5) == [[0, 1]]


def test_a_tie_across_the_top5_boundary_by_hand():
    # Votes 5, 4, 3, 2 for classes 0-3, then classes 4, 5, 6 tied at 1 for the last slot: g = 4, e = 3.
    counts = np.array([[5, 4, 3, 2, 1, 1, 1, 0]])
    assert expected_correct(counts, np.array([5]), 5)[0] == pytest.approx(1 / 3)
    assert expected_correct(counts, np.array([3]), 5)[0] == 1.0  # surely in: g = 3, e = 1
    assert expected_correct(counts, np.array([5]), 1)[0] == 0.0  # g = 4 >= 1
    # Ten classes with 2 votes each (k = 20): top-1 1/10, top-5 5/10.
    flat = np.full((1, 10), 2)
    assert expected_correct(flat, np.array([3]), 1)[0] == pytest.approx(0.1)
    assert expected_correct(flat, np.array([3]), 5)[0] == pytest.approx(0.5)
    # A unique winner: right surely, or wrong surely.
    assert expected_correct(np.array([[1, 5, 0], [1, 5, 0]]), np.array([1, 0]), 1).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("seed", range(4))
def test_expected_correct_equals_the_average_over_every_tie_break(seed):
    rng = np.random.default_rng(seed)
    counts = vote(rng.integers(0, 3, size=(40, 6)), 6)  # k = 6 over classes 0-2 only: many ties, zeros
    counts[:20] = vote(rng.integers(0, 6, size=(20, 4)), 6)  # k = 4 over 6 classes: unvoted classes
    labels = rng.integers(0, 6, size=40)
    for top in (1, 2, 5):
        got = expected_correct(counts, labels, top)
        want = [float(brute_correct(row, label, top)) for row, label in zip(counts.tolist(), labels.tolist())]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_voted_top_lists_voted_classes_only_by_vote_then_label():
    counts = np.array([[0, 3, 3, 0, 0, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 6]])
    assert voted_top(counts, 5) == [[1, 2, 5], [0, 1, 2, 3, 4], [5]]
    assert voted_top(counts, 1) == [[1], [0], [5]]


# Partition, McNemar, bootstrap, curve with fractional correctness -----------------------------------
def test_partition_shares_are_expectations_and_the_gap_is_memorized_minus_misrepresented():
    t = np.array([1.0, 0.5, 0.5, 0.0, 1 / 3])
    r = np.array([0.0, 0.0, 1.0, 0.5, 1 / 3])
    shares = partition_shares(t, r)
    # By hand, per crop (memorized, correlated, misrepresented, unassociated):
    # (1, 0, 0, 0), (.5, 0, 0, .5), (0, .5, .5, 0), (0, 0, .5, .5), (2/9, 1/9, 2/9, 4/9).
    expected = {"memorized": (1 + 0.5 + 2 / 9) / 5, "correlated": (0.5 + 1 / 9) / 5,
                "misrepresented": (0.5 + 0.5 + 2 / 9) / 5, "unassociated": (0.5 + 0.5 + 4 / 9) / 5}
    for part in PARTS:
        assert shares[part] == pytest.approx(expected[part])
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["memorized"] - shares["misrepresented"] == pytest.approx(t.mean() - r.mean())
    # 0/1 correctness gives the plain counts, as before.
    assert partition_shares(np.array([1, 1, 0], bool), np.array([0, 1, 1], bool)) == {
        "memorized": 1 / 3, "correlated": 1 / 3, "misrepresented": 1 / 3, "unassociated": 0.0}


def test_partition_label_is_the_most_probable_part_and_equal_ones_go_to_the_concordant_part():
    t = np.array([1.0, 0.5, 1.0, 0.5, 0.0, 0.5, 2 / 3, 1 / 3, 1.0])
    r = np.array([1 / 3, 0.0, 0.5, 0.5, 0.5, 1.0, 0.25, 0.0, 0.0])
    assert partition_labels(t, r).tolist() == [
        "memorized",       # 2/3 memorized vs 1/3 correlated
        "unassociated",    # memorized = unassociated = 1/2: the concordant part
        "correlated",      # memorized = correlated = 1/2
        "correlated",      # all four 1/4
        "unassociated",    # misrepresented = unassociated = 1/2
        "correlated",      # misrepresented = correlated = 1/2
        "memorized",       # 2/3 * 3/4 = 1/2 beats 1/6, 1/4, 1/12
        "unassociated",    # 2/3 beats 1/3
        "memorized",
    ]
    probabilities = part_probabilities(t, r)
    assert np.allclose(sum(probabilities.values()), 1.0)


def test_mcnemar_uses_the_expected_discordant_counts_rounded():
    t = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.0, 1 / 3])
    r = np.array([0.0, 0.0, 0.5, 0.0, 1.0, 1 / 3, 1.0])
    # b = 1 + 1 + 0.5 + 0.5 + 0 + 0 + 0 = 3; c = 0 + 0 + 0 + 0 + 0.5 + 1/3 + 2/3 = 1.5 -> 2 (half to even).
    test = mcnemar_exact(t, r)
    assert (test.b, test.c) == (3, 2)
    assert test.p_value == pytest.approx(1.0)  # Bin(5, 1/2): 2 * P(X <= 2) = 1, capped
    # 2.5 rounds to 2, 3.5 to 4 (halves to even, for b and c alike).
    assert (mcnemar_exact(np.full(5, 0.5), np.zeros(5)).b, mcnemar_exact(np.full(7, 0.5), np.zeros(7)).b) == (2, 4)
    # Sums of thirds land a rounding error off whole numbers; they still count whole.
    assert mcnemar_exact(np.full(9, 1 / 3), np.zeros(9)).b == 3


def test_bootstrap_resamples_fractional_correctness():
    # Every crop has target 1/2 and reference 0: every resample's gap is exactly 1/2.
    assert bootstrap_gap_ci([(np.full(40, 0.5), np.zeros(40))], n_resamples=50, seed=0) == (0.5, 0.5)
    t, r = np.array([1.0, 0.5] * 50), np.array([0.25, 0.25] * 50)  # gap 0.5
    lo, hi = bootstrap_gap_ci([(t, r)], n_resamples=200, seed=0)
    assert lo < 0.5 < hi and hi - lo < 0.25


def test_the_top_p_curve_takes_fractional_correctness():
    correct = np.array([0.5, 1.0, 0.0, 1 / 3])
    confidence = np.array([0.0, -0.5, -1.0, -1.0])
    # Most confident 50 %: crops 0 and 1 -> (0.5 + 1) / 2; 75 %: the tied block {2, 3} gives 1 slot
    # weighted 1/2 -> (1.5 + (0 + 1/3) / 2) / 3; 100 %: the mean.
    got = accuracy_curve(correct, confidence, np.array([0.5, 0.75, 1.0]))
    np.testing.assert_allclose(got, [0.75, (1.5 + 1 / 6) / 3, correct.mean()])


# The attack table and its summaries, by hand --------------------------------------------------------
def _hand_table():
    """4 crops, 4 classes, k = 4; labels 0, 1, 2, 3."""
    ids = np.array(["a", "b", "c", "d"])
    table = ImageTable(images=np.zeros((4, 4, 4, 3), np.uint8), labels=np.array([0, 1, 2, 3]),
                       boxes=np.full((4, 1, 4), np.nan, np.float32), ids=ids,
                       class_names=np.array(["w", "x", "y", "z"]))
    crops = {"id": ids, **{f"square_{k}": np.zeros(4, np.int64) for k in ("x0", "y0", "x1", "y1")}}
    target = {"ids": ids, "neighbour_labels": np.array([
        [0, 0, 1, 1],   # a (0): votes 2, 2 -> top-1 1/2, top-5 1
        [1, 1, 1, 2],   # b (1): unique winner -> 1, 1
        [0, 0, 0, 1],   # c (2): no vote -> 0, 0 (the old top-5 "0 1 2 3" counted it right)
        [0, 1, 2, 3],   # d (3): four-way tie -> 1/4, 1
    ])}
    reference = {"ids": ids, "neighbour_labels": np.array([
        [1, 1, 1, 0],   # a: behind class 1 -> 0, 1
        [0, 1, 2, 2],   # b: g = 1 (class 2) -> 0, 1
        [2, 2, 0, 1],   # c: unique winner -> 1, 1
        [0, 0, 0, 0],   # d: no vote -> 0, 0
    ])}
    return table, crops, ids, target, reference


def test_direction_table_and_summary_by_hand():
    table, crops, ids, target, reference = _hand_table()
    rows = direction_table(table, crops, ids, "A", target, reference, "A", "B", n_classes=4)
    assert rows["target_correct"].tolist() == [0.5, 1.0, 0.0, 0.25]
    assert rows["reference_correct"].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert rows["target_top5_correct"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert rows["reference_top5_correct"].tolist() == [1.0, 1.0, 1.0, 0.0]
    # Displayed predictions: voted classes only, by vote then label.
    assert rows["target_top5"].tolist() == ["0 1", "1 2", "0 1", "0 1 2 3"]
    assert rows["reference_top5"].tolist() == ["1 0", "2 0 1", "2 0 1", "0"]
    assert rows["target_top1"].tolist() == [0, 1, 0, 0] and rows["reference_top1"].tolist() == [1, 2, 2, 0]
    # a: memorized = unassociated = 1/2 -> unassociated; d: memorized 1/4 < unassociated 3/4.
    assert rows["partition"].tolist() == ["unassociated", "memorized", "misrepresented", "unassociated"]
    summary = direction_summary(rows)
    assert summary.target_acc == pytest.approx(1.75 / 4) and summary.reference_acc == pytest.approx(0.25)
    assert summary.target_top5_acc == pytest.approx(0.75) and summary.reference_top5_acc == pytest.approx(0.75)
    # memorized = (0.5 + 1 + 0 + 0.25) / 4; misrepresented = c's 1 / 4; correlated 0.
    assert summary.memorized == pytest.approx(1.75 / 4) and summary.misrepresented == pytest.approx(0.25)
    assert summary.correlated == 0.0 and summary.unassociated == pytest.approx((0.5 + 0.75) / 4)
    assert summary.gap == pytest.approx(summary.memorized - summary.misrepresented)
    # b = round(1.75) = 2, c = 1: two-sided exact p for 2 vs 1 is 1.
    assert (summary.mcnemar_b, summary.mcnemar_c, summary.mcnemar_p) == (2, 1, 1.0)
    # The most confident 20 % is one crop; b and c tie for it (votes 3-1 each): (1 + 0) / 2.
    assert summary.target_acc_top20 == pytest.approx(1.0 / 2)


def test_per_class_and_canary_groups_use_expected_shares():
    table, crops, ids, target, reference = _hand_table()
    rows = direction_table(table, crops, ids, "A", target, reference, "A", "B", n_classes=4)
    classes = {row.label: row for row in per_class(rows, table.class_names)}
    assert classes[0].target_acc == 0.5 and classes[0].memorized == 0.5 and classes[0].unassociated == 0.5
    assert classes[3].target_acc == 0.25 and classes[3].memorized == 0.25 and classes[3].unassociated == 0.75
    config = SimpleNamespace(bootstrap=0, ci_level=0.95)
    control = direction_table(table, crops, ids, "T1", target, reference, "A", "B", n_classes=4)
    summary = canary_summary({"attack": rows, "control": control}, np.array(["a", "d"]), 2, config, seed=0)
    # Canaries a and d: target (0.5 + 0.25) / 2, memorized (0.5 + 0.25) / 2 (the old label count gave 0).
    assert summary.canaries.target_acc == pytest.approx(0.375) and summary.canaries.memorized == pytest.approx(0.375)
    assert summary.ordinary.memorized == pytest.approx(0.5) and summary.ordinary.gap == pytest.approx(0.0)


# Embeddings: float32 by default, finite or refused ---------------------------------------------------
def test_non_finite_embeddings_are_refused_naming_model_set_rows_and_remedy():
    embeddings = np.ones((6, 4), np.float32)
    embeddings[1, 2] = np.nan
    embeddings[4, 0] = np.inf
    with pytest.raises(ModelError) as raised:
        stored_embeddings(embeddings, "B", "crops of set T", "float32")
    message = str(raised.value)
    assert "\n" not in message
    for part in ("model B (reference)", "2 of 6 crops of set T", "NaN", "diverged", "train.lr", "train.grad_clip",
                 "--out"):
        assert part in message, part


def test_a_float16_overflow_is_refused_and_float32_keeps_the_values():
    embeddings = np.array([[1.0, 7e4], [2.0, 3.0]], np.float32)  # float16 holds at most 65504
    with pytest.raises(ModelError, match=r"model A \(target\): 1 of 2 embeddings of the images of set X exceed the "
                                         r"float16 range .*attack.embedding_dtype=float32"):
        stored_embeddings(embeddings, "A", "images of set X", "float16")
    kept = stored_embeddings(embeddings, "A", "images of set X", "float32")
    assert kept.dtype == np.float32 and kept.tolist() == embeddings.tolist()
    assert stored_embeddings(np.array([[65504.0]], np.float32), "A", "x", "float16").tolist() == [[65504.0]]


def test_the_embedding_dtype_is_an_embed_key_with_float32_by_default(tmp_path):
    assert "attack.embedding_dtype" in EMBED.keys
    assert load_config(None, TINY).attack.embedding_dtype == "float32"
    default = fingerprints(Run(tmp_path / "a", load_config(None, TINY)))
    half = fingerprints(Run(tmp_path / "b", load_config(None, [*TINY, "attack.embedding_dtype=float16"])))
    assert default["embed"] != half["embed"] and default["train_A"] == half["train_A"]


# End to end: samples.csv recomputes metrics.json under the new conventions ---------------------------
def test_a_tiny_run_stores_float32_and_its_samples_recompute_the_metrics(tmp_path):
    run = Run(tmp_path / "run", load_config(None, [*TINY, "train.epochs=1", "threads=1"]))
    run.claim()
    run_all(run, log=lambda _: None)
    for model in ("A", "B"):
        assert load_npz(run.embeddings_dir / f"model_{model}" / "public_X.npz")["embeddings"].dtype == np.float32
    metrics = json.loads((run.root / "metrics.json").read_text())
    with open(run.root / "samples.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    per_direction = {}
    for direction, target, reference in (("A", "A", "B"), ("B", "B", "A")):
        mine = [r for r in rows if r["direction"] == direction]
        neighbours = {model: load_npz(run.neighbours_dir / f"model_{model}" / f"crops_{direction}.npz")
                      for model in (target, reference)}
        by_id = {model: dict(zip(n["ids"].tolist(), n["neighbour_labels"].tolist())) for model, n in neighbours.items()}
        t, r = [], []
        for row in mine:
            label = int(row["label"])
            for role, model, out in (("target", target, t), ("reference", reference, r)):
                counts = np.bincount(by_id[model][row["id"]], minlength=10).tolist()
                for top, key in ((1, f"{role}_correct"), (5, f"{role}_top5_correct")):
                    assert float(row[key]) == pytest.approx(float(brute_correct(counts, label, top)), abs=1e-6)
                assert all(counts[int(c)] > 0 for c in row[f"{role}_top5"].split())
                out.append(float(row[f"{role}_correct"]))
        t, r = np.array(t), np.array(r)
        assert [row["partition"] for row in mine] == partition_labels(t, r).tolist()
        detail = metrics["directions"][direction]
        assert detail["target_acc"] == pytest.approx(t.mean()) and detail["reference_acc"] == pytest.approx(r.mean())
        assert detail["memorized"] == pytest.approx(np.mean(t * (1 - r)))
        assert detail["gap"] == pytest.approx(detail["memorized"] - detail["misrepresented"])
        per_direction[direction] = (t, r)
    t = np.concatenate([v[0] for v in per_direction.values()])
    r = np.concatenate([v[1] for v in per_direction.values()])
    assert (metrics["mcnemar_b"], metrics["mcnemar_c"]) == (round(np.sum(t * (1 - r))), round(np.sum((1 - t) * r)))
