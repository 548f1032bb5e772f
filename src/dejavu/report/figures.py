"""The report's figures, each a pure function of ``metrics.json`` (as a dict) returning a Figure.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas rather than through
``pyplot``: pyplot keeps a global registry of open figures (a leak across many reports) and its
backend choice is process-wide, which would fight with anything else in the process that plots.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dejavu.metrics.stats import as_float as _number  # NaN for a missing metric: plots show a gap
from dejavu.runs import atomic_path

PARTS = ("memorized", "correlated", "misrepresented", "unassociated")
# Memorized is the part the audit is about, so it gets the loudest colour.
PART_COLOURS = {"memorized": "#d62728", "correlated": "#2ca02c", "misrepresented": "#9467bd", "unassociated": "#c7c7c7"}
TARGET_COLOUR = "#1f77b4"
REFERENCE_COLOUR = "#ff7f0e"
DIRECTION_COLOURS = ("#17becf", "#bcbd22")
# Figures are drawn at 100 dpi and shown at about that size on a desktop page (the page is 1180 px wide),
# so a point is a pixel: below 9 the text is hard to read, and the page only ever shrinks a figure.
LEGEND_FONTSIZE = 9
TICK_FONTSIZE = 9


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def legend_outside(owner, axes, ncols: int = 2, where: str = "lower center") -> None:
    """``axes``' legend on ``owner`` (its figure or subfigure) outside every axes: constrained layout then
    makes room for it, so it never covers data, whatever the data do. A legend inside the axes
    (``loc="best"`` or fixed) covers the curves of some run sooner or later."""
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        owner.legend(handles, labels, loc=f"outside {where}", ncols=min(ncols, len(handles)),
                     fontsize=LEGEND_FONTSIZE, frameon=False)


def panels(figure: Figure, rows: int, cols: int) -> list:
    """One (subfigure, axes) per panel: a subfigure per panel lets each panel's legend sit under its own
    axes (``legend_outside(subfigure, axes)``), which a figure-level legend cannot do for several panels."""
    return [(sub, sub.subplots()) for sub in figure.subfigures(rows, cols, squeeze=False).ravel()]


def _percent(values: Sequence[Any]) -> list[float]:
    return [100 * _number(v) for v in values]


def _plot_curves(axes, summary: Mapping[str, Any], title: str) -> None:
    """Pooled target/reference curves thick, each direction's thin in its own colour."""
    for colour, (name, detail) in zip(DIRECTION_COLOURS, summary.get("directions", {}).items()):
        curve = detail["curve"]
        x = _percent(curve["fractions"])
        axes.plot(x, _percent(curve["target"]), color=colour, lw=0.9, ls="-", label=f"{name}: target")
        axes.plot(x, _percent(curve["reference"]), color=colour, lw=0.9, ls="--", label=f"{name}: reference")
    curve = summary["curve"]
    x = _percent(curve["fractions"])
    axes.plot(x, _percent(curve["target"]), color=TARGET_COLOUR, lw=2.2, ls="-", label="pooled: target")
    axes.plot(x, _percent(curve["reference"]), color=REFERENCE_COLOUR, lw=2.2, ls="--", label="pooled: reference")
    axes.set_title(title)
    axes.set_xlabel("p % most confident crops")
    axes.set_xlim(0, 102)
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)


def confidence_curves(metrics: Mapping[str, Any]) -> Figure:
    """Accuracy among the p % most confident crops (p = 5..100), attack and control side by side.

    metrics: ``metrics.json``; reads ``curve`` {fractions (20,), target (20,), reference (20,)} of the
    pooled attack, of each of its ``directions`` and of ``control``.
    """
    figure = _figure(11, 5)
    (left_panel, left), (right_panel, right) = panels(figure, 1, 2)
    _plot_curves(left, metrics, "Attack (A, B: training images of the target)")
    _plot_curves(right, metrics["control"], "Control (T: held out from both models)")
    for panel, axes in ((left_panel, left), (right_panel, right)):
        axes.set_ylabel("label inference accuracy (%)")
        legend_outside(panel, axes, ncols=3)
    return figure


def partition_bars(metrics: Mapping[str, Any]) -> Figure:
    """Stacked shares of memorized / correlated / misrepresented / unassociated per row.

    Rows (top to bottom): direction A, direction B, pooled attack, control (pooled T1/T2).
    """
    rows = [(f"direction {name}", detail) for name, detail in metrics.get("directions", {}).items()]
    rows += [("pooled attack", metrics), ("control", metrics["control"])]
    figure = _figure(9, 0.6 * len(rows) + 1.4)
    axes = figure.subplots()
    positions = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    for part in PARTS:
        shares = [100 * _number(summary.get(part)) for _, summary in rows]
        axes.barh(positions, shares, left=left, color=PART_COLOURS[part], edgecolor="white", label=part)
        for y, start, share in zip(positions, left, shares):
            # Labels only where they fit; the table in the report has every number.
            if share >= 6:
                axes.text(start + share / 2, y, f"{share:.0f}%", ha="center", va="center", fontsize=9)
        left = [a + (b if not math.isnan(b) else 0.0) for a, b in zip(left, shares)]
    axes.set_yticks(positions, [name for name, _ in rows])
    axes.set_xlim(0, 100)
    axes.set_xlabel("share of attacked examples (%)")
    axes.set_title("Partition by which model infers the label correctly")
    legend_outside(figure, axes, ncols=4)
    return figure


def gap_intervals(metrics: Mapping[str, Any]) -> Figure:
    """Gap (target - reference accuracy, points) with its bootstrap interval, and a zero line.

    Rows: pooled attack, each attack direction, control (pooled T1/T2).
    """
    rows = [("pooled attack", metrics)]
    rows += [(f"direction {name}", detail) for name, detail in metrics.get("directions", {}).items()]
    rows += [("control", metrics["control"])]
    figure = _figure(8, 0.55 * len(rows) + 1.3)
    axes = figure.subplots()
    axes.axvline(0, color="black", lw=1)
    for y, (name, summary) in zip(range(len(rows))[::-1], rows):
        gap = 100 * _number(summary.get("gap"))
        low, high = (100 * _number(v) for v in (summary.get("gap_ci95") or (math.nan, math.nan)))
        colour = "#7f7f7f" if name == "control" else TARGET_COLOUR
        # A percentile interval need not contain the point estimate, hence the clipping at zero length.
        error = [[max(gap - low, 0.0)], [max(high - gap, 0.0)]]
        axes.errorbar([gap], [y], xerr=error, fmt="o", color=colour, capsize=4, lw=1.6)
    level = metrics.get("ci_level", 0.95)
    axes.set_yticks(list(range(len(rows)))[::-1], [name for name, _ in rows])
    axes.set_xlabel(f"accuracy gap, target - reference (points), {100 * _number(level):.0f} % bootstrap interval")
    axes.set_title("Déjà vu gap")
    axes.grid(axis="x", alpha=0.3)
    return figure


def per_class_accuracy(metrics: Mapping[str, Any]) -> Figure:
    """Target vs reference accuracy per foreground class (``per_class``, pooled over directions)."""
    entries = metrics.get("per_class") or []
    figure = _figure(max(6.0, 0.6 * len(entries) + 2), 4)
    axes = figure.subplots()
    if not entries:
        axes.text(0.5, 0.5, "no per-class results", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    x = list(range(len(entries)))
    width = 0.4
    axes.bar([i - width / 2 for i in x], [100 * _number(e["target_acc"]) for e in entries], width,
             color=TARGET_COLOUR, label="target")
    axes.bar([i + width / 2 for i in x], [100 * _number(e["reference_acc"]) for e in entries], width,
             color=REFERENCE_COLOUR, label="reference")
    axes.set_xticks(x, [str(e["class"]) for e in entries], rotation=45, ha="right")
    axes.set_ylabel("label inference accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title("Per class")
    legend_outside(figure, axes, ncols=1, where="right upper")  # bars reach 100 %: no corner of the axes is free
    axes.grid(axis="y", alpha=0.3)
    return figure


def roc_figure(metrics: Mapping[str, Any]) -> Figure:
    """ROC of the per-example déjà vu score, attacked crops (members) vs control crops (non-members).

    metrics: ``metrics.json``; reads ``roc`` {``curve`` {fpr, tpr}, ``auc``, ``min_measurable_fpr``}.
    FPR on a log scale from the smallest measurable FPR (1 / non-members) to 1; the curve's point at
    FPR 0 is drawn at that left edge. The dotted line is chance (TPR = FPR).
    """
    figure = _figure(5.5, 4.8)
    axes = figure.subplots()
    roc = metrics.get("roc") or {}
    curve = roc.get("curve") or {}
    fpr = [_number(v) for v in curve.get("fpr", [])]
    tpr = [_number(v) for v in curve.get("tpr", [])]
    if not fpr:
        axes.text(0.5, 0.5, "no ROC (no attacked or no control crops)", ha="center", va="center",
                  transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    left = _number(roc.get("min_measurable_fpr"))
    if not (0 < left < 1):  # one non-member (or a broken value): keep a usable axis
        left = 0.1
    chance = [left * (1 / left) ** (i / 100) for i in range(101)]
    axes.plot(chance, chance, color="#7f7f7f", ls=":", lw=1.2, label="chance (TPR = FPR)")
    x, y = _segments_on_log_axis(fpr, tpr, left)
    axes.plot(x, y, color=TARGET_COLOUR, lw=2.0, label=f"déjà vu score, AUC {_number(roc.get('auc')):.3f}")
    if len(fpr) < 60:  # the curve's vertices (one per distinct score), where few enough to see
        axes.plot([max(v, left) for v in fpr], tpr, ls="none", marker=".", color=TARGET_COLOUR)
    axes.set_xscale("log")
    axes.set_xlim(left, 1.0)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel(f"false positive rate (control crops), log scale from 1/{_count(roc.get('n_nonmembers'))}")
    axes.set_ylabel("true positive rate (attacked crops)")
    axes.set_title("Membership-inference view")
    axes.grid(alpha=0.3, which="both")
    # Below the axes: a strong attack's curve climbs the upper left, a weak one hugs the diagonal.
    legend_outside(figure, axes, ncols=1)
    return figure


def _segments_on_log_axis(fpr: Sequence[float], tpr: Sequence[float], left: float,
                          steps: int = 24) -> tuple[list[float], list[float]]:
    """The ROC's straight segments (straight in linear FPR: a tied block, or what lies between two
    kept vertices) sampled at log-spaced FPRs, so a log axis shows them as they are, not as straight
    lines in log space. FPRs below ``left`` (FPR 0) are drawn at ``left``."""
    xs, ys = [max(fpr[0], left)], [tpr[0]]
    for f0, t0, f1, t1 in zip(fpr, tpr, fpr[1:], tpr[1:]):
        start = max(f0, left)
        if f1 <= start:  # vertical (or entirely left of the axis): only its end matters
            xs.append(max(f1, left))
            ys.append(t1)
            continue
        for i in range(1, steps + 1):
            f = start * (f1 / start) ** (i / steps)
            xs.append(f)
            ys.append(t0 + (t1 - t0) * (f - f0) / (f1 - f0))
    return xs, ys


def _count(value: Any) -> str:
    number = _number(value)
    return "?" if math.isnan(number) else str(int(number))


def training_curves(losses: Mapping[str, Sequence[float]], method: str) -> Figure:
    """Mean training loss per epoch of each model (``{"A": [...], "B": [...]}``)."""
    figure = _figure(5.0, 3.4)
    axes = figure.add_subplot()
    for (name, values), colour in zip(losses.items(), (TARGET_COLOUR, REFERENCE_COLOUR)):
        axes.plot(range(1, len(values) + 1), values, color=colour, label=f"model {name}")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # a few epochs would get ticks at 1.5, 2.5
    axes.set_ylabel(f"{method} loss")
    axes.grid(alpha=0.3)
    legend_outside(figure, axes, ncols=1, where="right upper")
    return figure


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def save_png(figure: Figure, path: str | Path, close: bool = True) -> bytes:
    """Write ``figure`` as PNG to ``path`` atomically and return the bytes written.

    ``close`` clears the figure afterwards, releasing its artists right away rather than at
    garbage collection (a report renders several).
    """
    data = png_bytes(figure)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    if close:
        figure.clear()
    return data


FIGURES = {
    "confidence_curves": confidence_curves,
    "partition": partition_bars,
    "gap": gap_intervals,
    "per_class": per_class_accuracy,
    "roc": roc_figure,
}
