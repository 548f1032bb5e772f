"""The report's first screen: one headline per test (its decision, the statistic that decides with its
interval and p, the reasons) and the figure of every deciding statistic, all read from ``metrics.json``'s
``outcomes`` (:mod:`dejavu.metrics.outcomes`), never from a sentence."""

from __future__ import annotations

import math
from typing import Any, Mapping

from dejavu.metrics.outcomes import HEADS, shown, shown_interval
from dejavu.report.figures import TICK_FONTSIZE, _figure, legend_outside
from dejavu.report.format import p_value

# The report section each test's headline links to.
ANCHORS = {"image": "numbers", "one_model": "one-model", "vlm": "vlm", "reconstruction": "reconstruction"}
# Colours by decision: red for memorization found, green for a clearance, amber for neither, grey for none.
DECISION_COLOURS = {"detected": "#d62728", "not_detected": "#2ca02c", "inconclusive": "#e6a100",
                    "no_verdict": "#7f7f7f"}


def headlines(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per outcome, in the run's order (the headline test first), what its box on the first screen shows."""
    out = []
    for name, o in metrics["outcomes"].items():
        out.append({
            "test": name, "title": o["title"], "decision": o["decision"], "head": HEADS[o["decision"]],
            "anchor": ANCHORS[name], "sentence": o["sentence"], "alpha": f"{o['alpha']:g}",
            "numbers": [{"label": part["label"], "estimate": shown(part["estimate"], part["unit"]),
                         "interval": f"{100 * part['level']:g} % CI {shown_interval(part['interval'], part['unit'])}",
                         "p": f"{part['method']} p = {p_value(part['p'])}"} for part in o["parts"]],
            "reasons": [reason["text"] for reason in o["reasons"]],
        })
    return out


def _rows(outcomes: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    return [(f"{o['title']}: {part['label']}", part, o) for o in outcomes.values() for part in o["parts"]]


def outcome_figure(metrics: Mapping[str, Any]) -> Any:
    """Every deciding statistic of the run on one axis, in points (a difference of shares x 100: of crops for
    the image, one-model and reconstruction tests, of records for PPG / PRG): the estimate, its interval, the
    band within which an interval clears (± ``metrics.clear_margin``) and zero; each row named above its bar
    with its decision, in its decision's colour."""
    rows = _rows(metrics["outcomes"])
    figure = _figure(6.4, 0.75 + 0.62 * len(rows))
    axes = figure.subplots()
    margin = 100 * max(float(o["margin"]) for _, _, o in rows)
    axes.axvspan(-margin, margin, color="#2ca02c", alpha=0.12, lw=0,
                 label=f"± {margin:g} points: an interval inside it clears the model")
    axes.axvline(0, color="black", lw=0.8)
    reach = [margin * 1.5]
    for y, (label, part, o) in enumerate(reversed(rows)):
        low, high = (100 * float(v) for v in part["interval"])
        estimate = 100 * float(part["estimate"])
        colour = DECISION_COLOURS[o["decision"]]
        if all(math.isfinite(v) for v in (low, high, estimate)):
            axes.errorbar([estimate], [y], xerr=[[estimate - low], [high - estimate]], fmt="o", color=colour,
                          capsize=4, lw=2)
            reach += [abs(low), abs(high)]
        axes.annotate(f"{label}: {o['decision'].replace('_', ' ')}", (0, y + 0.22), xycoords=("axes fraction", "data"),
                      xytext=(4, 0), textcoords="offset points", va="bottom", color=colour,
                      fontsize=TICK_FONTSIZE, fontweight="bold")
    limit = 1.1 * max(reach)
    axes.set_xlim(-limit, limit)
    axes.set_yticks([])
    axes.set_ylim(-0.5, len(rows) - 0.1)
    levels = sorted({f"{100 * float(part['level']):g} %" for _, part, _ in rows})
    axes.set_xlabel(f"estimate, points (bars: {' / '.join(levels)} interval)", fontsize=TICK_FONTSIZE)
    axes.tick_params(axis="x", labelsize=TICK_FONTSIZE)
    legend_outside(figure, axes, ncols=1)
    return figure
