"""The membership-inference view: ROC / AUC / TPR at low FPR of the per-example déjà vu score, checked
against hand computations and brute force, the new per-example columns, and a tiny end-to-end run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dejavu.data.records import ImageTable
from dejavu.metrics.roc import auc, roc_curve, roc_summary, tpr_at_fpr
from dejavu.metrics.tables import direction_table
from dejavu.report.figures import FIGURES, roc_figure


# Brute force ---------------------------------------------------------------------------------------
def brute_auc(members, nonmembers) -> float:
    """Every (member, non-member) pair: 1 if the member scores higher, 1/2 if tied."""
    m = np.asarray(members, float)[:, None]
    n = np.asarray(nonmembers, float)[None, :]
    return float(np.mean((m > n) + 0.5 * (m == n)))


def brute_points(members, nonmembers) -> list[tuple[float, float]]:
    """(FPR, TPR) of "score >= t" for t = +inf and every score that occurs, from the highest down."""
    m, n = np.asarray(members, float), np.asarray(nonmembers, float)
    thresholds = [np.inf, *np.unique(np.concatenate([m, n]))[::-1]]
    return [(float(np.mean(n >= t)), float(np.mean(m >= t))) for t in thresholds]


def brute_tpr_at_fpr(members, nonmembers, target: float) -> float:
    return max(tpr for fpr, tpr in brute_points(members, nonmembers) if fpr <= target)


# AUC -----------------------------------------------------------------------------------------------
def test_auc_of_separated_reversed_and_identical_scores():
    assert auc([0.9, 0.8, 0.7], [0.1, 0.2]) == 1.0
    assert auc([0.1, 0.2], [0.9, 0.8, 0.7]) == 0.0
    assert auc([0.3, 0.3, 0.3], [0.3, 0.3]) == 0.5
    same = np.random.default_rng(1).normal(size=50)
    assert auc(same, same) == pytest.approx(0.5)


def test_auc_with_ties_by_hand():
    # Members [1, 1, 0], non-members [1, 0, 0]: 9 pairs. Each member 1 beats both 0s and ties the 1
    # (2 + 0.5 each, twice: 5); the member 0 loses to the 1 and ties both 0s (1). AUC = 6 / 9.
    assert auc([1, 1, 0], [1, 0, 0]) == pytest.approx(6 / 9)
    # Déjà vu-like scores (multiples of 1/k): members [0.4, 0.2, 0.2, -0.2], non-members [0.2, 0.0, -0.2]:
    # 0.4 beats 3 (3); each 0.2 ties 1, beats 2 (2.5, twice: 5); -0.2 ties 1 (0.5). (3 + 5 + 0.5) / 12.
    assert auc([0.4, 0.2, 0.2, -0.2], [0.2, 0.0, -0.2]) == pytest.approx(8.5 / 12)


@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_the_pairwise_count_on_random_data(seed):
    rng = np.random.default_rng(seed)
    m_size, n_size = rng.integers(1, 80, size=2)
    if seed % 2:  # heavy ties: a handful of distinct values, as déjà vu scores have
        members = rng.integers(-3, 4, size=m_size) / 3
        nonmembers = rng.integers(-3, 3, size=n_size) / 3
    else:
        members = rng.normal(0.3, 1, size=m_size)
        nonmembers = rng.normal(0, 1, size=n_size)
    assert auc(members, nonmembers) == pytest.approx(brute_auc(members, nonmembers), abs=1e-12)
    # ... and the trapezoidal area under the curve (tied blocks are straight diagonal segments).
    fpr, tpr, _ = roc_curve(members, nonmembers)
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(brute_auc(members, nonmembers), abs=1e-12)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one member"):
        auc([], [0.1])
    with pytest.raises(ValueError, match="finite"):
        auc([np.nan], [0.1])
    with pytest.raises(ValueError, match="fpr"):
        tpr_at_fpr([1], [0], 1.5)


# Curve ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_roc_curve_endpoints_monotone_and_equal_to_brute_force(seed):
    rng = np.random.default_rng(10 + seed)
    members = rng.integers(-5, 6, size=int(rng.integers(1, 60))) / 5
    nonmembers = rng.integers(-5, 4, size=int(rng.integers(1, 60))) / 5
    fpr, tpr, thresholds = roc_curve(members, nonmembers)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert thresholds[0] == np.inf and np.all(np.diff(thresholds) < 0)
    assert np.allclose(np.column_stack([fpr, tpr]), brute_points(members, nonmembers), rtol=0, atol=1e-12)


def test_tied_scores_move_both_rates_in_one_step():
    fpr, tpr, thresholds = roc_curve([1, 1, 0], [1, 0])
    # Threshold 1 takes both member 1s and the non-member 1 at once: (0, 0) -> (1/2, 2/3) directly.
    assert fpr.tolist() == [0.0, 0.5, 1.0]
    assert tpr.tolist() == pytest.approx([0.0, 2 / 3, 1.0])
    assert thresholds.tolist() == [np.inf, 1.0, 0.0]


def test_tpr_at_fpr_by_hand():
    members, nonmembers = [0.9, 0.8, 0.3], [0.85, 0.1, 0.05, 0.0]
    # Thresholds from the top: 0.9 -> (FPR 0, TPR 1/3); 0.85 -> (1/4, 1/3); 0.8 -> (1/4, 2/3);
    # 0.3 -> (1/4, 1); 0.1 -> (2/4, 1); 0.05 -> (3/4, 1); 0.0 -> (1, 1).
    assert tpr_at_fpr(members, nonmembers, 0.0) == pytest.approx(1 / 3)
    assert tpr_at_fpr(members, nonmembers, 0.2) == pytest.approx(1 / 3)  # below 1/4: only FPR 0 qualifies
    assert tpr_at_fpr(members, nonmembers, 0.25) == 1.0  # threshold 0.3: all members, 1 of 4 non-members
    assert tpr_at_fpr(members, nonmembers, 1.0) == 1.0
    assert auc(members, nonmembers) == pytest.approx(10 / 12)  # 0.9 beats 4, 0.8 and 0.3 beat 3 each


def test_tpr_at_fpr_takes_no_point_above_the_target():
    # A tied block jumps from (0, 0) to (1/2, 1): at FPR 0.4 nothing better than (0, 0) is allowed,
    # although interpolation along the diagonal segment would give TPR 0.8.
    assert tpr_at_fpr([1, 1], [1, 0], 0.4) == 0.0
    assert tpr_at_fpr([1, 1], [1, 0], 0.5) == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_tpr_at_fpr_equals_brute_force(seed):
    rng = np.random.default_rng(20 + seed)
    members = rng.integers(-4, 5, size=70) / 4
    nonmembers = rng.integers(-4, 3, size=int(rng.integers(5, 150))) / 4
    for target in (0.0, 0.001, 0.01, 0.05, 0.1, 0.3, 1 / len(nonmembers), 1.0):
        assert tpr_at_fpr(members, nonmembers, target) == pytest.approx(brute_tpr_at_fpr(members, nonmembers, target))


# Summary and bootstrap -----------------------------------------------------------------------------
def _normal(n_members: int, n_nonmembers: int, seed: int = 0, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1, n_members), rng.normal(0, 1, n_nonmembers)


def test_summary_keys_and_point_values():
    members, nonmembers = _normal(400, 300)
    s = roc_summary(members, nonmembers, bootstrap=200, seed=0)
    assert s["auc"] == pytest.approx(brute_auc(members, nonmembers))
    assert s["tpr_at_fpr_0.01"] == pytest.approx(brute_tpr_at_fpr(members, nonmembers, 0.01))
    # 300 non-members: FPR 0.001 < 1/300 is not measurable, so the TPR is the TPR at FPR 0.
    assert s["min_measurable_fpr"] == pytest.approx(1 / 300)
    assert s["tpr_at_fpr_0.001"] == pytest.approx(np.mean(members > nonmembers.max()))
    assert (s["n_members"], s["n_nonmembers"], s["bootstrap"], s["ci_level"]) == (400, 300, 200, 0.95)
    for key in ("auc_ci", "tpr_at_fpr_0.01_ci", "tpr_at_fpr_0.001_ci"):
        assert len(s[key]) == 2 and s[key][0] <= s[key][1]
    json.dumps(s)  # what metrics.json stores


def test_summary_curve_is_thinned_to_true_vertices_with_both_ends():
    members, nonmembers = _normal(3000, 2500, seed=3)
    s = roc_summary(members, nonmembers, bootstrap=0)
    fpr, tpr = np.array(s["curve"]["fpr"]), np.array(s["curve"]["tpr"])
    assert 20 <= len(fpr) <= 200
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    full_fpr, full_tpr, _ = roc_curve(members, nonmembers)
    vertices = set(zip(full_fpr.tolist(), full_tpr.tolist()))
    assert all(point in vertices for point in zip(fpr.tolist(), tpr.tolist()))
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    # The low-FPR end, which a log axis shows, is sampled too: some kept points below FPR 1 %.
    assert np.sum((fpr > 0) & (fpr < 0.01)) >= 5


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_data():
    small = roc_summary(*_normal(60, 60, seed=4, shift=0.8), bootstrap=1000, seed=1)
    large = roc_summary(*_normal(2000, 2000, seed=4, shift=0.8), bootstrap=1000, seed=1)
    for s in (small, large):
        for key in ("auc", "tpr_at_fpr_0.01"):
            low, high = s[f"{key}_ci"]
            assert low <= s[key] <= high, (key, s[key], low, high)
    width = {name: s["auc_ci"][1] - s["auc_ci"][0] for name, s in (("small", small), ("large", large))}
    # Standard error shrinks like 1/sqrt(n): about 5.8x narrower; ask for 3x.
    assert width["large"] * 3 < width["small"]
    assert large["auc"] == pytest.approx(0.71, abs=0.03)  # Phi(0.8 / sqrt(2)) = 0.714


def test_bootstrap_matches_resampling_indices_and_is_seeded():
    """The tally (multinomial) bootstrap has the distribution of resampling each group's indices."""
    rng = np.random.default_rng(5)
    members = rng.integers(-3, 4, size=150) / 3
    nonmembers = rng.integers(-3, 3, size=120) / 3
    s = roc_summary(members, nonmembers, bootstrap=2000, seed=7)
    draws = np.array([
        auc(members[rng.integers(0, len(members), len(members))],
            nonmembers[rng.integers(0, len(nonmembers), len(nonmembers))])
        for _ in range(2000)
    ])
    direct = np.quantile(draws, [0.025, 0.975])
    assert s["auc_ci"] == pytest.approx(direct.tolist(), abs=0.012)
    again = roc_summary(members, nonmembers, bootstrap=2000, seed=7)
    other = roc_summary(members, nonmembers, bootstrap=2000, seed=8)
    assert again == s and other["auc_ci"] != s["auc_ci"]


def test_summary_without_members_or_nonmembers_is_nan():
    s = roc_summary([], [0.1, 0.2], bootstrap=10)
    assert np.isnan(s["auc"]) and np.isnan(s["tpr_at_fpr_0.01"]) and s["curve"] == {"fpr": [], "tpr": []}
    assert s["n_members"] == 0 and s["min_measurable_fpr"] == 0.5
    assert np.isnan(roc_summary([0.1], [], bootstrap=10)["min_measurable_fpr"])


# Figure --------------------------------------------------------------------------------------------
def test_roc_figure_is_registered_and_log_scaled_from_the_min_measurable_fpr():
    assert FIGURES["roc"] is roc_figure
    s = roc_summary(*_normal(200, 250), bootstrap=0)
    figure = roc_figure({"roc": s})
    axes = figure.axes[0]
    assert axes.get_xscale() == "log"
    assert axes.get_xlim() == pytest.approx((1 / 250, 1.0))
    lines = {line.get_label(): line.get_xydata() for line in axes.lines}
    chance = lines["chance (TPR = FPR)"]
    assert np.allclose(chance[:, 0], chance[:, 1]) and chance[0, 0] == pytest.approx(1 / 250)
    curve = lines[f"déjà vu score, AUC {s['auc']:.3f}"]
    # Drawn through the ROC's own vertices: its TPR at each FPR of the curve equals the summary's.
    for f, t in zip(s["curve"]["fpr"], s["curve"]["tpr"]):
        if f >= 1 / 250:
            assert np.any(np.isclose(curve[:, 0], f) & np.isclose(curve[:, 1], t)), (f, t)
    empty = roc_figure({})
    assert not empty.axes[0].axison


# Per-example columns -------------------------------------------------------------------------------
def test_dejavu_score_columns_by_hand():
    """3 crops, 3 classes, k = 4; the neighbour files list ids in different orders (joined on ids)."""
    ids = np.array(["a", "b", "c"])
    table = ImageTable(images=np.zeros((3, 4, 4, 3), np.uint8), labels=np.array([0, 1, 2]),
                       boxes=np.full((3, 1, 4), np.nan, np.float32), ids=ids, class_names=np.array(["x", "y", "z"]))
    crops = {"id": ids, **{f"square_{k}": np.zeros(3, np.int64) for k in ("x0", "y0", "x1", "y1")}}
    target = {"ids": np.array(["a", "b", "c"]),
              "neighbour_labels": np.array([[0, 0, 0, 1],    # a (label 0): 3 true votes
                                            [1, 0, 2, 2],    # b (label 1): 1
                                            [0, 0, 1, 1]])}  # c (label 2): 0
    reference = {"ids": np.array(["c", "a", "b"]),
                 "neighbour_labels": np.array([[2, 0, 0, 0],    # c: 1
                                               [1, 1, 1, 0],    # a: 1
                                               [1, 1, 1, 1]])}  # b: 4
    rows = direction_table(table, crops, ids, "A", target, reference, "A", "B", n_classes=3)
    assert rows["target_true_votes"].tolist() == [3, 1, 0]
    assert rows["reference_true_votes"].tolist() == [1, 4, 1]
    # (3 - 1) / 4, (1 - 4) / 4, (0 - 1) / 4
    assert rows["dejavu_score"].tolist() == [0.5, -0.75, -0.25]
    # The existing columns are still there and unchanged in meaning.
    assert rows["target_top1"].tolist() == [0, 2, 0] and rows["reference_top1"].tolist() == [1, 1, 0]
    assert rows["target_correct"].tolist() == [1, 0, 0] and rows["partition"].tolist() == [
        "memorized", "misrepresented", "unassociated"]


# End to end ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def roc_run(tmp_path_factory):
    """Every stage the metrics and the report read, on tiny sizes, one epoch, one thread (a tiny run is
    many times slower with two threads on busy cores)."""
    import torch

    from dejavu.config import load_config
    from dejavu.stages import STAGE_BY_NAME, run_stage
    from dejavu.runs import Run
    from tests.conftest import TINY

    run = Run(tmp_path_factory.mktemp("roc") / "run", load_config(None, [*TINY, "train.epochs=1", "threads=1"]))
    run.claim()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in STAGE_BY_NAME:
            run_stage(run, name, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return run


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_metrics_json_has_the_roc_of_the_csv_scores(roc_run):
    metrics = json.loads((roc_run.root / "metrics.json").read_text())
    roc = metrics["roc"]
    members = [float(r["dejavu_score"]) for r in _rows(roc_run.root / "samples.csv")]
    nonmembers = [float(r["dejavu_score"]) for r in _rows(roc_run.root / "control_samples.csv")]
    assert 0 <= roc["auc"] <= 1
    assert roc["auc"] == pytest.approx(brute_auc(members, nonmembers))
    assert roc["tpr_at_fpr_0.01"] == pytest.approx(brute_tpr_at_fpr(members, nonmembers, 0.01))
    assert (roc["n_members"], roc["n_nonmembers"]) == (len(members), len(nonmembers))
    assert roc["min_measurable_fpr"] == pytest.approx(1 / len(nonmembers))
    assert roc["bootstrap"] == roc_run.config.metrics.bootstrap
    assert roc["auc_ci"][0] <= roc["auc_ci"][1]
    for key in ("outcomes", "gap", "gap_ci95", "control", "directions", "per_class"):
        assert key in metrics


def test_csv_scores_recompute_from_the_saved_neighbours(roc_run):
    from dejavu.artifacts import load_table
    from dejavu.runs import load_npz

    n_classes = len(load_table(roc_run, with_images=False).class_names)
    k = roc_run.config.attack.k
    for name, query_set in (("samples.csv", None), ("control_samples.csv", "T")):
        rows = _rows(roc_run.root / name)
        assert rows
        for r in rows:
            crops = f"crops_{query_set or r['direction']}.npz"
            votes = {}
            for role in ("target", "reference"):
                saved = load_npz(roc_run.neighbours_dir / f"model_{r[f'{role}_model']}" / crops)
                labels = saved["neighbour_labels"][saved["ids"].tolist().index(r["id"])]
                votes[role] = int(np.bincount(labels, minlength=n_classes)[int(r["label"])])
                assert int(r[f"{role}_true_votes"]) == votes[role]
            assert float(r["dejavu_score"]) == pytest.approx((votes["target"] - votes["reference"]) / k)
            assert -1 <= float(r["dejavu_score"]) <= 1


def test_report_has_the_membership_inference_section(roc_run):
    text = (roc_run.root / "report.html").read_text(encoding="utf-8")
    start = text.index("Membership-inference view")
    assert text.index("<h2>Negative control</h2>") < start < text.index("<h2>Figures</h2>")
    section = text[start:text.index("<h2>Figures</h2>")]
    assert 'id="fig-roc"' in section and "data:image/png;base64," in section
    assert (roc_run.figures_dir / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
