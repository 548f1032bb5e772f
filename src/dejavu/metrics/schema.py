"""Typed schema of ``metrics.json`` (CONTRACT STUB: being filled in by the metrics-schema work).

``SUMMARY_ROWS`` is the contract the report builds its numbers tables from: one row per metric of a
summary (pooled attack, a direction, the control), in display order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Format = Literal["integer", "pct", "points", "interval", "p_value"]


@dataclass(frozen=True)
class SummaryRow:
    label: str
    key: str
    format: Format


SUMMARY_ROWS: tuple[SummaryRow, ...] = (
    SummaryRow("attacked examples", "n_attacked", "integer"),
    SummaryRow("target accuracy (top-1)", "target_acc", "pct"),
    SummaryRow("reference accuracy (top-1)", "reference_acc", "pct"),
    SummaryRow("gap, target - reference (points)", "gap", "points"),
    SummaryRow("gap 95 % bootstrap interval", "gap_ci95", "interval"),
    SummaryRow("target accuracy, 20 % most confident", "target_acc_top20", "pct"),
    SummaryRow("reference accuracy, 20 % most confident", "reference_acc_top20", "pct"),
    SummaryRow("déjà vu score, top 20 % (points)", "dejavu_score_top20", "points"),
    SummaryRow("target accuracy, 5 % most confident", "target_acc_top05", "pct"),
    SummaryRow("reference accuracy, 5 % most confident", "reference_acc_top05", "pct"),
    SummaryRow("déjà vu score, top 5 % (points)", "dejavu_score_top05", "points"),
    SummaryRow("target top-5 prediction accuracy", "target_top5_acc", "pct"),
    SummaryRow("reference top-5 prediction accuracy", "reference_top5_acc", "pct"),
    SummaryRow("memorized (target right, reference wrong)", "memorized", "pct"),
    SummaryRow("correlated (both right)", "correlated", "pct"),
    SummaryRow("misrepresented (target wrong, reference right)", "misrepresented", "pct"),
    SummaryRow("unassociated (both wrong)", "unassociated", "pct"),
    SummaryRow("McNemar b (target right, reference wrong)", "mcnemar_b", "integer"),
    SummaryRow("McNemar c (target wrong, reference right)", "mcnemar_c", "integer"),
    SummaryRow("exact McNemar p", "mcnemar_p", "p_value"),
)
