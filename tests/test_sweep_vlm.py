"""The sweep's side of the vision-language test: sweep.csv's vlm_* columns (the excess over the control for a
text-only reference), the seed count by the vision-language outcome (dejavu.metrics.outcomes), and the index page's PPG / PRG figure and table."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from dejavu.metrics.outcomes import Outcome, vlm_outcome
from dejavu.metrics.schema import from_json, to_json
from dejavu.metrics.vlm_schema import Vlm
from dejavu.report.sweep import vlm_sweep_figure, write_sweep_report
from dejavu.sweep import VLM_EXCESS_COLUMNS, _write_table, summarise_points, vlm_columns
from tests.test_report_layout import legend_overlaps

ALPHA = 0.01
SIGNIFICANT = {"ppg": 0.12, "ppg_p": 1e-4, "prg": 0.10, "prg_p": 1e-6}


def _gaps(ppg: float, ppg_p: float, prg: float, prg_p: float) -> dict:
    """VlmGaps' keys, the rest filler: what metrics.json["vlm"] holds at the top level, per direction, the control."""
    return {"n": 100, "ppg": ppg, "ppg_p": ppg_p, "ppg_ci": [ppg - 0.05, ppg + 0.05], "ppg_wins": 40,
            "ppg_losses": 30, "prg": prg, "prg_p": prg_p, "prg_ci": [prg - 0.05, prg + 0.05], "prg_wins": 20,
            "prg_losses": 10, "target_precision": 0.35, "reference_precision": 0.34, "target_recall": 0.96,
            "reference_recall": 0.93, "recall_gap_auc": 0.55, "top": {"1": {"n": 100, "ppg": ppg, "prg": prg}}}


def _vlm(gaps: dict, control: tuple[float, float] = (-0.01, 0.02), excess: dict | None = None) -> Vlm:
    """metrics.json["vlm"] as the metrics stage writes it, read through the schema."""
    payload = {**_gaps(**gaps), "k": 10, "directions": {"A": _gaps(**gaps), "B": _gaps(**gaps)},
               "control": _gaps(control[0], 0.8, control[1], 0.7), "retrieval": {"A": 0.4, "B": 0.4, "chance": 0.02},
               "failures": [], "reference": "model"}
    if excess is not None:
        payload.update(reference="text", excess={**excess, "ppg_ci": [0.0, 0.1], "prg_ci": [0.0, 0.1]})
    return from_json(Vlm, payload, "metrics.json", "vlm")


def _outcome(vlm: Vlm) -> Outcome:
    """The vision-language outcome the metrics stage decides for ``vlm`` (a run whose gates passed)."""
    return vlm_outcome({"vlm": to_json(vlm), "ci_level": 0.95, "alpha": ALPHA}, ALPHA, 0.05)


def _row(value: float, seed: int, vlm: Vlm, gap: float = 0.0) -> dict:
    """A CLIP point's sweep.csv row (the image test's columns the summary reads, and the vlm_* ones)."""
    return {"sweep": "mask", "train.clip.caption_mask": value, "seed": seed, "gap": gap, "mcnemar_p": 0.5,
            "decision": "inconclusive", "alpha": ALPHA, "report": f"points/{value}_{seed}/report.html",
            **vlm_columns(vlm, _outcome(vlm))}


def test_excess_columns_hold_the_text_references_gaps_beyond_the_control_and_are_empty_without(tmp_path):
    excess = {"ppg": 0.03, "ppg_p": 0.2, "prg": -0.01, "prg_p": 0.6}
    text = vlm_columns(_vlm(SIGNIFICANT, excess=excess), _outcome(_vlm(SIGNIFICANT, excess=excess)))
    assert [text[c] for c in VLM_EXCESS_COLUMNS] == [0.03, 0.2, -0.01, 0.6]
    assert (text["vlm_ppg"], text["vlm_prg_p"], text["vlm_control_ppg"]) == (0.12, 1e-6, -0.01)
    model = vlm_columns(_vlm(SIGNIFICANT), _outcome(_vlm(SIGNIFICANT)))
    assert all(model[c] is None for c in VLM_EXCESS_COLUMNS) and model["vlm_ppg"] == 0.12
    _write_table(tmp_path / "sweep.csv", [model, text])
    with open(tmp_path / "sweep.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [written[0][c] for c in VLM_EXCESS_COLUMNS] == ["", "", "", ""]
    assert float(written[1]["vlm_excess_ppg"]) == 0.03


def test_significant_seeds_count_the_vlm_outcomes_which_judge_the_excess_for_a_text_reference():
    not_beyond = _vlm(SIGNIFICANT, excess={"ppg": 0.01, "ppg_p": 0.4, "prg": 0.02, "prg_p": 0.3})
    beyond = _vlm(SIGNIFICANT, excess={"ppg": 0.08, "ppg_p": 1e-3, "prg": 0.05, "prg_p": 2e-3})
    rows = [_row(0.0, 0, not_beyond), _row(0.0, 1, not_beyond),  # plain gaps significant, the excess not
            _row(0.3, 0, beyond), _row(0.3, 1, not_beyond),
            _row(0.6, 0, _vlm(SIGNIFICANT)), _row(0.6, 1, _vlm({**SIGNIFICANT, "prg_p": 0.2}))]  # two-model runs
    summary = summarise_points(rows)
    assert [entry["vlm_significant_seeds"] for entry in summary] == [0, 1, 1]
    # The outcome decides on the excess with a text reference, on the pooled gaps without; both gaps must hold.
    assert _outcome(not_beyond).decision == "inconclusive" and _outcome(beyond).decision == "detected"
    assert [part.statistic for part in _outcome(beyond).parts] == ["excess_ppg", "excess_prg"]
    assert [part.estimate for part in _outcome(beyond).parts] == [0.08, 0.05]
    plain = _outcome(_vlm(SIGNIFICANT))
    assert plain.decision == "detected" and [(s.estimate, s.p) for s in plain.parts] == [(0.12, 1e-4), (0.10, 1e-6)]
    # The headline statistic of two is the one with the larger p (an intersection-union test's p).
    assert (plain.statistic, plain.p) == ("ppg", 1e-4)
    weak = _outcome(_vlm({**SIGNIFICANT, "prg_p": 0.2}))
    assert weak.decision == "inconclusive" and weak.statistic == "prg" and weak.reasons[0].text.startswith("PRG: ")
    # The excess is summarised like the other gaps; a two-model point's empty cells have no mean.
    assert summary[0]["vlm_excess_ppg"]["mean"] == pytest.approx(0.01)
    assert summary[1]["vlm_excess_prg"]["mean"] == pytest.approx(0.035)
    assert summary[2]["vlm_excess_ppg"]["mean"] is None and summary[2]["vlm_ppg"]["mean"] == pytest.approx(0.12)


def _lines(axes) -> dict[str, np.ndarray]:
    """Every curve's y values by its legend label (an error bar's from its container)."""
    lines = {line.get_label(): np.asarray(line.get_ydata(), float) for line in axes.get_lines()}
    lines.update({c.get_label(): np.asarray(c.lines[0].get_ydata(), float) for c in axes.containers})
    return lines


def test_vlm_figure_plots_ppg_prg_their_control_and_excess_against_the_key():
    rows = []
    for value, ppgs, prgs in ((0.0, (0.14, 0.10), (0.10, 0.08)), (0.6, (0.06, 0.04), (0.03, 0.01))):
        for seed, (ppg, prg) in enumerate(zip(ppgs, prgs)):
            excess = {"ppg": ppg - 0.05, "ppg_p": 0.01, "prg": prg - 0.02, "prg_p": 0.01}
            rows.append(_row(value, seed, _vlm({**SIGNIFICANT, "ppg": ppg, "prg": prg}, (0.01 * seed, -0.02),
                                               excess)))
    figure = vlm_sweep_figure(rows, "train.clip.caption_mask")
    ppg_axes, prg_axes = [axes for axes in figure.get_axes() if axes.axison]
    ppg, prg = _lines(ppg_axes), _lines(prg_axes)
    over = "± sd over seeds"
    np.testing.assert_allclose(ppg[f"PPG (target − reference), {over}"], [0.12, 0.05])
    np.testing.assert_allclose(prg[f"PRG (target − reference), {over}"], [0.09, 0.02])
    np.testing.assert_allclose(ppg["PPG beyond the control's (text reference; the verdict's), ± sd"], [0.07, 0.0],
                               atol=1e-12)
    np.testing.assert_allclose(ppg["control PPG (T's captions)"], [0.005, 0.005])
    np.testing.assert_allclose(prg["control PRG (T's captions)"], [-0.02, -0.02])
    # The bars: ± the sample sd over the two seeds (|a - b| / sqrt 2).
    bars = ppg_axes.containers[0].lines[2][0].get_segments()
    np.testing.assert_allclose([top[1] - bottom[1] for bottom, top in bars], [2 * 0.04 / 2 ** 0.5, 2 * 0.02 / 2 ** 0.5])
    assert [t.get_text() for t in ppg_axes.get_xticklabels()] == ["0.0", "0.6"]
    assert legend_overlaps(figure) == []


def test_the_sweep_page_shows_the_vlm_figure_and_columns_for_clip_points(tmp_path):
    excess = {"ppg": 0.01, "ppg_p": 0.4, "prg": 0.02, "prg_p": 0.3}
    rows = [{**_row(value, 0, _vlm(SIGNIFICANT, excess=excess)), "target_acc": 0.5, "reference_acc": 0.5,
             "gap_ci_low": -0.1, "gap_ci_high": 0.1, "memorized": 0.1, "correlated": 0.1, "misrepresented": 0.1,
             "auc": 0.5, "control_gap": 0.0, "target_acc_top20": 0.5, "reference_acc_top20": 0.5} for value in (0.0, 0.6)]
    study = {"config": None, "overrides": [], "seeds": 1, "redraw_split": True,
             "sweeps": {"mask": {"grid": {"train.clip.caption_mask": [0.0, 0.6]}, "zip": False, "overrides": []}}}
    page = write_sweep_report(tmp_path, study, rows, summarise_points(rows)).read_text(encoding="utf-8")
    assert (tmp_path / "figures" / "sweep_train_clip_caption_mask_vlm.png").read_bytes()[:4] == b"\x89PNG"
    assert "Against train.clip.caption_mask: vision-language test" in page
    assert "<th>PPG / PRG beyond control</th>" in page and "<th>image-test verdict</th>" in page
    assert "+0.120" in page and "+0.010" in page and ">0 of 1<" in page
