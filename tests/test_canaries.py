"""Canaries (split.canaries): planted memorization in A, the tool's self-check."""

import json

import numpy as np
import pytest

import dejavu

from dejavu.config import load_config
from dejavu.errors import ConfigError, DataError
from dejavu.artifacts import load_canaries, load_split, load_table, training_rows
from dejavu.stages import fingerprints, run_all, run_stage
from dejavu.stages.data import choose_canaries
from dejavu.report.sections import canary_section
from dejavu.runs import Run
from tests.conftest import TINY


def _split(tmp_path, name, extra):
    run = Run(tmp_path / name, load_config(None, [*TINY, *extra]))
    run.claim()
    for stage in ("data", "split"):
        run_stage(run, stage, log=lambda _: None)
    return run


def test_canaries_are_boxed_a_ids_deterministic_and_leave_the_sets_alone(tmp_path):
    plain = _split(tmp_path, "plain", [])
    first = _split(tmp_path, "first", ["split.canaries=12", "split.canary_repeats=4"])
    again = _split(tmp_path, "again", ["split.canaries=12", "split.canary_repeats=4"])
    table = load_table(first, with_images=False)
    canaries, repeats = load_canaries(first)
    assert repeats == 4 and len(canaries) == 12 == len(set(canaries))
    sets = load_split(first)
    assert set(canaries) <= set(sets["A"].tolist())
    assert table.boxed[np.isin(table.ids, canaries)].all()
    assert load_canaries(again)[0].tolist() == canaries.tolist()
    for name, members in load_split(plain).items():
        assert members.tolist() == sets[name].tolist(), name
    assert load_canaries(plain)[0].size == 0
    # The split's fingerprint covers the canaries, so training (which reads the split) re-runs.
    assert fingerprints(plain)["split"] != fingerprints(first)["split"]
    assert fingerprints(plain)["train_A"] != fingerprints(first)["train_A"]
    assert fingerprints(plain)["data"] == fingerprints(first)["data"]


def test_training_rows_repeat_each_canary_for_model_a_only(tmp_path):
    run = _split(tmp_path, "rows", ["split.canaries=5", "split.canary_repeats=7"])
    table = load_table(run, with_images=False)
    sets = load_split(run)
    canaries, repeats = load_canaries(run)
    rows_a = training_rows(table, sets, "A", canaries, repeats)
    rows_b = training_rows(table, sets, "B", canaries, repeats)
    counts = {table.ids[row]: n for row, n in zip(*np.unique(rows_a, return_counts=True))}
    assert set(counts) == set(sets["A"].tolist())
    assert all(counts[i] == (7 if i in set(canaries) else 1) for i in counts)
    assert len(rows_a) == len(sets["A"]) + 6 * 5
    assert sorted(table.ids[rows_b].tolist()) == sorted(sets["B"].tolist())
    with pytest.raises(DataError, match="split.canaries"):
        choose_canaries(table, sets["A"], len(sets["A"]) + 1, 0)
    assert training_rows(table, sets, "A", canaries, 1).tolist() == training_rows(table, sets, "A", canaries[:0], 7).tolist()


def test_canary_keys_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="split.canaries"):
        load_config(None, [*TINY, "split.canaries=-1"])
    with pytest.raises(ConfigError, match="split.canary_repeats"):
        load_config(None, [*TINY, "split.canary_repeats=0"])
    with pytest.raises(ConfigError, match="split.canaries"):
        load_config(None, [*TINY, "split.canaries=81"])  # A holds 8 x 10 images
    assert load_config(None, [*TINY, "split.canaries=80"]).split.canaries == 80


# Measured with `dejavu run threads=1 metrics.bootstrap=200 <CANARY_RUN> --out ...` (2 cores, seed 0):
# canaries target 55 % vs reference 35 % (gap +20), ordinary A 40 % vs 35 % (+5), T 40.6 % vs 40.8 % (-0.2);
# AUC vs T: canaries 0.737 [0.628, 0.847], ordinary A 0.561 [0.498, 0.630]. About 50 s on 2 cores.
# Seeds 1 and 2 (same command, seed=1/2): canary AUC 0.759 / 0.610 vs ordinary 0.468 / 0.450; canary gap
# +15 / +20 points vs ordinary -3.8 / -11.2; T gap -0.6 / -1.2. The assertions hold for all three seeds
# with room (the smallest AUC margin is +0.16, the smallest gap margin +15 points), since another processor
# gives other rounding, i.e. in effect another seed.
# Re-measured by this test (seed 0) after issue 12 item 8 (tied votes count fractionally, embeddings float32):
# canaries 55 % vs 35 % (+20), ordinary A 36.9 % vs 35.6 % (+1.3), T 40.5 % vs 40.8 % (-0.3); AUC canaries 0.719,
# ordinary 0.564. Ties hardly move these accuracies (model A's vote has a tied top-1 on 9 of the 200 attacked
# crops, model B's on 5).
# Since 2026-12-06 the test runs on every core the machine gives (not threads=1) and trains 100 epochs, not 150
# (84 s -> about 45 s on 2 cores). Measured so (`dejavu run seed=S metrics.bootstrap=200 <CANARY_RUN>`, then
# the one-model audit of its model A; 2-core VM), seeds 0 / 1 / 2: AUC canaries 0.705 / 0.593 / 0.591 vs
# ordinary 0.541 / 0.439 / 0.411; gap canaries +20 / +15 / +30 vs ordinary +2.5 / -5 / -16.2 points; T gap
# +0.2 / -0.3 / +0.2; one-model excess over T canaries +22.6 / +22.1 / +26.3 vs ordinary +2.6 / +7.1 / -12.4.
# Every assertion holds in all three (the thinnest: canary AUC > 0.55 by 0.04 in seeds 1 and 2).
CANARY_RUN = ["data.images_per_class=200", "split.x_per_class=100", "split.t_per_class=50", "train.epochs=100",
              "split.canaries=20", "split.canary_repeats=20"]


def test_planted_canaries_are_detected_above_ordinary_images_and_t_stays_at_chance(tmp_path):
    run = Run(tmp_path / "canaries", load_config(None, ["metrics.bootstrap=200", *CANARY_RUN]))
    run.claim()
    run_all(run, log=lambda _: None)
    metrics = json.loads((run.root / "metrics.json").read_text())
    c = metrics["canaries"]
    assert c["ids"] == 20 and c["repeats"] == 20
    assert c["canaries"]["n"] + c["ordinary"]["n"] == metrics["directions"]["A"]["n_attacked"]
    assert c["control"]["n"] == metrics["control"]["n_attacked"]
    # Canaries are memorized: detected clearly above ordinary A images (measured +0.18 AUC, +15 points gap).
    assert c["roc"]["canaries_vs_T"]["auc"] > 0.55
    assert c["roc"]["canaries_vs_T"]["auc"] >= c["roc"]["ordinary_vs_T"]["auc"] + 0.08
    assert c["canaries"]["gap"] >= c["ordinary"]["gap"] + 0.05
    assert c["canaries"]["mean_dejavu_score"] > c["ordinary"]["mean_dejavu_score"]
    # T: neither model trained on it.
    assert abs(c["control"]["gap"]) <= 0.05
    assert abs(c["control"]["mean_dejavu_score"]) <= 0.05
    # The gap over T's: in the two-model test T's gap is near 0, so it is about the gap itself.
    for group in ("canaries", "ordinary"):
        excess = c[group]["excess_over_T"]
        assert excess["value"] == pytest.approx(c[group]["gap"] - c["control"]["gap"], abs=1e-12)
        assert excess["ci95"][0] <= excess["value"] <= excess["ci95"][1] and 0 < excess["p_value"] <= 1
    assert "excess_over_T" not in c["control"]
    html = (run.root / "report.html").read_text()
    assert "Canaries (self-check)" in html and "gap over T" in html
    assert canary_section({"verdict": ""}) == ""

    # The one-model test on the same target: the classifier, which never saw A, finds the canaries too.
    # Measured (2 cores, 2026-12-03): seed 0, canaries 55 % vs the classifier's 40 %, ordinary A 38.1 % vs
    # 41.3 %, T 42.0 % vs 49.8 %: the canaries' gap over T's +22.8 [+0.6, +43.6] points (p = 0.010), the
    # ordinary images' +4.7 (p = 0.36); seeds 1 and 2: canaries +24.5 / +16.0, ordinary +5.8 / -9.0. The
    # margin asserted is under half the smallest measured (+18 points); the intervals' lower ends (+0.6 to
    # +7.9) are too close to 0 with 20 canaries to assert.
    one = dejavu.audit(target=run.root / "models/A/model.safetensors", out=tmp_path / "one",
                       config=run.root / "config.json").metrics.canaries
    assert one.canaries.excess_over_T.value >= one.ordinary.excess_over_T.value + 0.08
    assert one.canaries.gap > one.ordinary.gap
