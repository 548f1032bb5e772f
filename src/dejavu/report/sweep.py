"""The sweep's page: paper-style figures against each grid key (and the vision-language test's, for CLIP
points), and a table linking every point's report.

``templates/sweep.html`` (extending ``base.html``, like the run report) lays out the plain data prepared here."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dejavu.report.figures import (PART_COLOURS, REFERENCE_COLOUR, TARGET_COLOUR, TICK_FONTSIZE, _figure, _number,
                                   legend_outside, panels, save_png)
from dejavu.metrics.pvalue import format_p
from dejavu.report.format import format_value
from dejavu.report.templating import data_uri, render
from dejavu.runs import atomic_path


def _by_value(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[Any], dict[Any, list[Mapping[str, Any]]]]:
    """The swept values in grid order and the rows (all seeds, other grid keys pooled) at each."""
    values: list[Any] = []
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        value = row[key]
        label = str(value)
        if label not in groups:
            values.append(value)
            groups[label] = []
        groups[label].append(row)
    return values, groups


def _series(groups, values, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over the rows at each value (min = max = mean for one seed; NaN where no row has it)."""
    stats = [[_number(row.get(metric)) for row in groups[str(v)]] for v in values]
    with warnings.catch_warnings():  # a value whose rows all lack the metric (e.g. no excess) is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return (np.array([np.nanmean(s) for s in stats]), np.array([np.nanmin(s) for s in stats]),
                np.array([np.nanmax(s) for s in stats]))


def _sd(groups, values, metric: str) -> np.ndarray:
    """Sample standard deviation over the rows at each value (0 for one row; NaN where no row has it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.array([np.nanstd([_number(row.get(metric)) for row in groups[str(v)]], ddof=1)
                         if len(groups[str(v)]) > 1 else 0.0 for v in values])


def _label_x(axes_list, values: Sequence[Any], key: str) -> None:
    labels = [str(v) for v in values]
    # Long values (layer names, methods, several of them) collide on a panel half the figure wide.
    rotation = 30 if sum(len(label) + 2 for label in labels) > 40 else 0
    for axes in axes_list:
        axes.set_xticks(np.arange(len(values)), labels, fontsize=TICK_FONTSIZE, rotation=rotation,
                        ha="right" if rotation else "center")
        axes.tick_params(axis="y", labelsize=TICK_FONTSIZE)
        axes.set_xlabel(key)
        axes.grid(alpha=0.3)


def sweep_figure(rows: Sequence[Mapping[str, Any]], key: str, pooled: bool = False):
    """Four panels against ``key``: accuracies (target solid, reference dashed) at p = 20 % and 100 %;
    partition shares stacked; the gap (mean over seeds, bars: ± sd) with its 95 % bootstrap band and the
    control; kNN / linear-probe accuracy of model A on T and their train - test gaps. ``pooled``: the rows
    at one value of ``key`` also span other grid keys' values (the legend says so). Two by two, each
    legend under its own panel: in one row of four the panels were too narrow for legends beside the data."""
    over = "over seeds and other grid values" if pooled else "over seeds"
    values, groups = _by_value(rows, key)
    x = np.arange(len(values))
    figure = _figure(11.0, 8.6)
    (accuracy_panel, accuracy), (partition_panel, partition), (gap_panel, gap_axes), (conventional_panel, conventional) = \
        panels(figure, 2, 2)
    for suffix, alpha, label in (("_top20", 1.0, "p = 20 %"), ("", 0.45, "p = 100 %")):
        for role, colour, style in (("target", TARGET_COLOUR, "-"), ("reference", REFERENCE_COLOUR, "--")):
            mean, low, high = _series(groups, values, f"{role}_acc{suffix}")
            accuracy.plot(x, 100 * mean, color=colour, ls=style, marker="o", alpha=alpha, label=f"{role}, {label}")
            accuracy.fill_between(x, 100 * low, 100 * high, color=colour, alpha=0.12 * alpha)
    accuracy.set_ylabel("label inference accuracy (%)")
    legend_outside(accuracy_panel, accuracy, ncols=2)
    bottom = np.zeros(len(values))
    for part in ("correlated", "misrepresented", "memorized"):
        share = 100 * _series(groups, values, part)[0]
        partition.bar(x, share, bottom=bottom, color=PART_COLOURS[part], label=part)
        bottom += share
    partition.set_ylabel("share of attacked crops (%)")
    legend_outside(partition_panel, partition, ncols=3)
    gap = 100 * _series(groups, values, "gap")[0]
    spread = 100 * _sd(groups, values, "gap")
    low = 100 * _series(groups, values, "gap_ci_low")[1]
    high = 100 * _series(groups, values, "gap_ci_high")[2]
    gap_axes.errorbar(x, gap, yerr=spread, color="#d62728", marker="o", capsize=3,
                      label=f"gap (target − reference), ± sd {over}")
    gap_axes.fill_between(x, low, high, color="#d62728", alpha=0.2, label=f"95 % interval (widest {over})")
    gap_axes.plot(x, 100 * _series(groups, values, "control_gap")[0], color="#7f7f7f", ls=":", marker=".",
                  label="control gap")
    gap_axes.axhline(0, color="black", lw=0.6)
    gap_axes.set_ylabel("gap (points)")
    legend_outside(gap_panel, gap_axes, ncols=1)
    for metric, colour, label in (("knn", "#17becf", "kNN"), ("linear_probe", "#bcbd22", "linear probe")):
        if not any(f"backbone_{metric}_test" in row for row in rows):
            continue
        conventional.plot(x, 100 * _series(groups, values, f"backbone_{metric}_test")[0], color=colour, marker="o",
                          label=f"{label} on T")
        conventional.plot(x, 100 * _series(groups, values, f"backbone_{metric}_gap")[0], color=colour, ls="--",
                          marker=".", label=f"{label}, train − T")
    conventional.axhline(0, color="black", lw=0.6)
    conventional.set_ylabel("model A, backbone (%)")
    legend_outside(conventional_panel, conventional, ncols=2)
    _label_x((accuracy, partition, gap_axes, conventional), values, key)
    return figure


def has_excess(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any CLIP row has a text-only reference's gaps beyond the control's (what its verdict judges)."""
    return any(row.get("vlm_excess_ppg") not in (None, "") for row in rows)


def vlm_sweep_figure(rows: Sequence[Mapping[str, Any]], key: str, pooled: bool = False):
    """The vision-language test against ``key`` (CLIP points), PPG and PRG side by side: the gap (mean over
    seeds, bars: ± sd), the control's on T and, with a text-only reference, the gap beyond the control's (the
    one its verdict judges). Gaps are shares of records (target better minus worse), as in metrics.json.
    ``pooled``: as for :func:`sweep_figure`."""
    over = "over seeds and other grid values" if pooled else "over seeds"
    values, groups = _by_value(rows, key)
    x = np.arange(len(values))
    excess = has_excess(rows)
    figure = _figure(11.0, 4.8)
    drawn = []
    for (panel, axes), measure in zip(panels(figure, 1, 2), ("ppg", "prg")):
        name = measure.upper()
        axes.errorbar(x, _series(groups, values, f"vlm_{measure}")[0], yerr=_sd(groups, values, f"vlm_{measure}"),
                      color="#d62728", marker="o", capsize=3, label=f"{name} (target − reference), ± sd {over}")
        if excess:
            axes.errorbar(x, _series(groups, values, f"vlm_excess_{measure}")[0],
                          yerr=_sd(groups, values, f"vlm_excess_{measure}"), color="#9467bd", ls="--", marker="s",
                          capsize=3, label=f"{name} beyond the control's (text reference; the verdict's), ± sd")
        axes.plot(x, _series(groups, values, f"vlm_control_{measure}")[0], color="#7f7f7f", ls=":", marker=".",
                  label=f"control {name} (T's captions)")
        axes.axhline(0, color="black", lw=0.6)
        axes.set_ylabel(f"{name} (share of records)")
        legend_outside(panel, axes, ncols=1)
        drawn.append(axes)
    _label_x(drawn, values, key)
    return figure


def _pm(entry: Mapping[str, Any], metric: str, scale: float = 100.0, signed: bool = False, digits: int = 1) -> str:
    stats = entry.get(metric)
    if not stats or stats["mean"] is None:
        return ""
    sign = "+" if signed else ""
    text = f"{scale * stats['mean']:{sign}.{digits}f}"
    return text + (f" ± {scale * stats['sd']:.{digits}f}" if len(entry["seeds"]) > 1 else "")


def _values(row: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    return [format_value(row[key]) for key in keys]


SUMMARY_HEADER = ["seeds", "gap (points)", "target / reference acc (%)", "memorized (%)", "AUC", "control gap",
                  "kNN / probe on T (A, %)", "verdict"]
RUNS_HEADER = ["seed", "target / reference acc", "gap [95 % CI]", "McNemar p", "memorized", "AUC", "control gap",
               "kNN / probe on T (A)", "report"]


def _cell(text: str, css: str = "num", title: str = "") -> dict[str, Any]:
    """A table cell. A value split over two lines ("0.504 ±" / "0.039") reads as two values, so ``num``
    cells (a value, "mean ± sd", an interval) never wrap; ``num pair`` cells ("target / reference") wrap
    only between their two values, which keeps the points' table within a desktop page; ``text`` cells
    (the verdict) wrap anywhere."""
    return {"parts": [text], "class": css, "title": title}


def _pair(first: str, second: str) -> dict[str, Any]:
    return {**_cell(first, "num pair"), "parts": [first, second]}


def _pct(value: Any) -> str:
    return f"{100 * _number(value):.1f} %"


# CLIP points' columns, before the verdict (``excess``: with a text-only reference).
VLM_HEADER = ["PPG / PRG", "control PPG / PRG"]
EXCESS_HEADER = ["PPG / PRG beyond control"]
VLM_SEEDS_HEADER = ["vision-language déjà vu (seeds)"]
VLM_SEEDS_TITLE = ("seeds whose PPG and PRG (with a text-only reference: beyond the control's) are both positive "
                   "with p below metrics.alpha")


def _gaps(entry: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """PPG / PRG as shares of records, three digits (as metrics.json and the run report give them)."""
    ppg, prg = (_pm(entry, f"{prefix}{measure}", 1.0, signed=True, digits=3) for measure in ("ppg", "prg"))
    return _pair(ppg, prg)


def _vlm_cells(entry: Mapping[str, Any], excess: bool) -> list[dict[str, Any]]:
    count = entry.get("vlm_significant_seeds")
    return [_gaps(entry, "vlm_"), _gaps(entry, "vlm_control_"), *([_gaps(entry, "vlm_excess_")] if excess else []),
            _cell("" if count is None else f"{count} of {len(entry['seeds'])}", title=VLM_SEEDS_TITLE)]


def _summary_header(keys: Sequence[str], vlm: bool, excess: bool) -> list[str]:
    if not vlm:
        return [*keys, *SUMMARY_HEADER]
    return [*keys, *SUMMARY_HEADER[:-1], *VLM_HEADER, *(EXCESS_HEADER if excess else []), *VLM_SEEDS_HEADER,
            "image-test verdict"]


def _summary_rows(keys: Sequence[str], summary: Sequence[Mapping[str, Any]], vlm: bool = False,
                  excess: bool = False) -> list[list[dict[str, str]]]:
    return [[*map(_cell, _values(entry, keys)),
             # How many seeds back the mean ± sd is what the column is read for; the ids are in the runs table.
             _cell(str(len(entry["seeds"])), title="seed ids: " + ", ".join(map(str, entry["seeds"]))),
             _cell(_pm(entry, "gap", signed=True)), _pair(_pm(entry, "target_acc"), _pm(entry, "reference_acc")),
             _cell(_pm(entry, "memorized")), _cell(_pm(entry, "auc", 1.0, digits=3)),
             _cell(_pm(entry, "control_gap", signed=True)),
             _pair(_pm(entry, "backbone_knn_test"), _pm(entry, "backbone_linear_probe_test")),
             *(_vlm_cells(entry, excess) if vlm else []), _cell(entry["verdict"], "text")]
            for entry in summary]


def _run_row(keys: Sequence[str], row: Mapping[str, Any]) -> dict[str, Any]:
    """One point's cells and the relative link to its report."""
    cells = [
        *map(_cell, _values(row, [*keys, "seed"])), _pair(_pct(row["target_acc"]), _pct(row["reference_acc"])),
        _cell(f"{100 * _number(row['gap']):+.1f} [{100 * _number(row['gap_ci_low']):+.1f}, "
              f"{100 * _number(row['gap_ci_high']):+.1f}]"),
        _cell(format_p(_number(row['mcnemar_p']))), _cell(_pct(row["memorized"])), _cell(f"{_number(row.get('auc')):.3f}"),
        _cell(f"{100 * _number(row['control_gap']):+.1f}"),
        _pair(_pct(row.get("backbone_knn_test")), _pct(row.get("backbone_linear_probe_test"))),
    ]
    return {"cells": cells, "report": str(row["report"])}


def _sweep_data(out: Path, study: Mapping[str, Any], name: str, rows: Sequence[Mapping[str, Any]],
                summary: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One sweep of the study: its figures (written to ``figures/``), points and runs."""
    sweep = study["sweeps"][name]
    keys = list(sweep["grid"])
    these = [row for row in rows if row["sweep"] == name]
    entries = [entry for entry in summary if entry["sweep"] == name]
    single = len(study["sweeps"]) == 1
    vlm, excess = any("vlm_ppg" in row for row in these), has_excess(these)
    figures = []
    for key in keys[:1] if sweep["zip"] else keys:
        stem = key.replace(".", "_") if single else f"{name}_{key.replace('.', '_')}"
        pooled = len(keys) > 1 and not sweep["zip"]
        png = save_png(sweep_figure(these, key, pooled), out / "figures" / f"sweep_{stem}.png")
        figures.append({"key": key, "what": "", "uri": data_uri(png)})
        if vlm:
            png = save_png(vlm_sweep_figure(these, key, pooled), out / "figures" / f"sweep_{stem}_vlm.png")
            figures.append({"key": key, "what": "vision-language test", "uri": data_uri(png)})
    return {
        "title": "" if single else name, "grid": str(sweep["grid"]), "zip": bool(sweep["zip"]),
        "overrides": str(sweep["overrides"] or "none"), "figures": figures,
        "summary_header": _summary_header(keys, vlm, excess),
        "summary_rows": _summary_rows(keys, entries, vlm, excess),
        "vlm_note": VLM_SEEDS_TITLE if vlm else "",
        "runs_header": [*keys, *RUNS_HEADER], "runs": [_run_row(keys, row) for row in these],
    }


def write_sweep_report(out: Path, study: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                       summary: Sequence[Mapping[str, Any]]) -> Path:
    """``index.html`` (self-contained): per sweep, one figure per swept key (the first key of a zipped
    grid; CLIP points add the vision-language test's), the points' mean ± sd over seeds with a verdict, and
    every run linked to its report."""
    seeds = (f"{study['seeds']} seed(s) per point, " +
             ("data, split and training re-drawn for each" if study["redraw_split"] else
              "one data split, the training's seed (train.seed) varied"))
    page = render(
        "sweep.html", name=out.name, base_config=str(study.get("config") or "built-in defaults"),
        overrides=str(study.get("overrides")), seeds=seeds,
        sweeps=[_sweep_data(out, study, name, rows, summary) for name in study["sweeps"]],
    )
    path = out / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_bytes(page.encode("utf-8"))
    return path
