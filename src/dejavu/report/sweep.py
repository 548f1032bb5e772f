"""The sweep's page: paper-style figures against the first grid key, and a table linking every point's report.

``templates/sweep.html`` (extending ``base.html``, like the run report) lays out the plain data prepared here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dejavu.report.figures import PART_COLOURS, REFERENCE_COLOUR, TARGET_COLOUR, _figure, _number, save_png
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
    """Mean, min and max over the rows at each value (min = max = mean for one seed)."""
    stats = [[_number(row.get(metric)) for row in groups[str(v)]] for v in values]
    return (np.array([np.nanmean(s) for s in stats]), np.array([np.nanmin(s) for s in stats]),
            np.array([np.nanmax(s) for s in stats]))


def sweep_figure(rows: Sequence[Mapping[str, Any]], key: str, pooled: bool = False):
    """Four panels against ``key``: accuracies (target solid, reference dashed) at p = 20 % and 100 %;
    partition shares stacked; the gap (mean over seeds, bars: ± sd) with its 95 % bootstrap band and the
    control; kNN / linear-probe accuracy of model A on T and their train - test gaps. ``pooled``: the rows
    at one value of ``key`` also span other grid keys' values (the legend says so)."""
    over = "over seeds and other grid values" if pooled else "over seeds"
    values, groups = _by_value(rows, key)
    x = np.arange(len(values))
    figure = _figure(12.0, 3.4)
    axes = figure.subplots(1, 4)
    for suffix, alpha, label in (("_top20", 1.0, "p = 20 %"), ("", 0.45, "p = 100 %")):
        for role, colour, style in (("target", TARGET_COLOUR, "-"), ("reference", REFERENCE_COLOUR, "--")):
            mean, low, high = _series(groups, values, f"{role}_acc{suffix}")
            axes[0].plot(x, 100 * mean, color=colour, ls=style, marker="o", alpha=alpha, label=f"{role}, {label}")
            axes[0].fill_between(x, 100 * low, 100 * high, color=colour, alpha=0.12 * alpha)
    axes[0].set_ylabel("label inference accuracy (%)")
    axes[0].legend(fontsize=6)
    bottom = np.zeros(len(values))
    for part in ("correlated", "misrepresented", "memorized"):
        share = 100 * _series(groups, values, part)[0]
        axes[1].bar(x, share, bottom=bottom, color=PART_COLOURS[part], label=part)
        bottom += share
    axes[1].set_ylabel("share of attacked crops (%)")
    axes[1].legend(fontsize=6)
    gap = 100 * _series(groups, values, "gap")[0]
    spread = 100 * np.array([np.nanstd([_number(r["gap"]) for r in groups[str(v)]], ddof=1)
                             if len(groups[str(v)]) > 1 else 0.0 for v in values])
    low = 100 * _series(groups, values, "gap_ci_low")[1]
    high = 100 * _series(groups, values, "gap_ci_high")[2]
    axes[2].errorbar(x, gap, yerr=spread, color="#d62728", marker="o", capsize=3, label=f"gap (target − reference), ± sd {over}")
    axes[2].fill_between(x, low, high, color="#d62728", alpha=0.2, label=f"95 % interval (widest {over})")
    axes[2].plot(x, 100 * _series(groups, values, "control_gap")[0], color="#7f7f7f", ls=":", marker=".", label="control gap")
    axes[2].axhline(0, color="black", lw=0.6)
    axes[2].set_ylabel("points")
    axes[2].legend(fontsize=6)
    for metric, colour, label in (("knn", "#17becf", "kNN"), ("linear_probe", "#bcbd22", "linear probe")):
        if not any(f"backbone_{metric}_test" in row for row in rows):
            continue
        axes[3].plot(x, 100 * _series(groups, values, f"backbone_{metric}_test")[0], color=colour, marker="o",
                     label=f"{label} on T")
        axes[3].plot(x, 100 * _series(groups, values, f"backbone_{metric}_gap")[0], color=colour, ls="--",
                     marker=".", label=f"{label}, train − T")
    axes[3].axhline(0, color="black", lw=0.6)
    axes[3].set_ylabel("model A, backbone (%)")
    axes[3].legend(fontsize=6)
    for ax in axes:
        ax.set_xticks(x, [str(v) for v in values], fontsize=7)
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
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


def _summary_rows(keys: Sequence[str], summary: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[*_values(entry, keys), " ".join(map(str, entry["seeds"])), _pm(entry, "gap", signed=True),
             f"{_pm(entry, 'target_acc')} / {_pm(entry, 'reference_acc')}", _pm(entry, "memorized"),
             _pm(entry, "auc", 1.0, digits=3), _pm(entry, "control_gap", signed=True),
             f"{_pm(entry, 'backbone_knn_test')} / {_pm(entry, 'backbone_linear_probe_test')}", entry["verdict"]]
            for entry in summary]


def _run_row(keys: Sequence[str], row: Mapping[str, Any]) -> dict[str, Any]:
    """One point's cells (text) and the relative link to its report."""
    cells = [
        *_values(row, [*keys, "seed"]),
        f"{100 * _number(row['target_acc']):.1f} % / {100 * _number(row['reference_acc']):.1f} %",
        f"{100 * _number(row['gap']):+.1f} [{100 * _number(row['gap_ci_low']):+.1f}, {100 * _number(row['gap_ci_high']):+.1f}]",
        f"{_number(row['mcnemar_p']):.2g}", f"{100 * _number(row['memorized']):.1f} %", f"{_number(row.get('auc')):.3f}",
        f"{100 * _number(row['control_gap']):+.1f}",
        f"{100 * _number(row.get('backbone_knn_test')):.1f} % / {100 * _number(row.get('backbone_linear_probe_test')):.1f} %",
    ]
    return {"cells": cells, "report": str(row["report"])}


def _sweep_data(out: Path, study: Mapping[str, Any], name: str, rows: Sequence[Mapping[str, Any]],
                summary: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One sweep of the study: its figures (written to ``figures/``), points and runs."""
    sweep = study["sweeps"][name]
    keys = list(sweep["grid"])
    these = [row for row in rows if row["sweep"] == name]
    single = len(study["sweeps"]) == 1
    figures = []
    for key in keys[:1] if sweep["zip"] else keys:
        stem = key.replace(".", "_") if single else f"{name}_{key.replace('.', '_')}"
        pooled = len(keys) > 1 and not sweep["zip"]
        png = save_png(sweep_figure(these, key, pooled), out / "figures" / f"sweep_{stem}.png")
        figures.append({"key": key, "uri": data_uri(png)})
    return {
        "title": "" if single else name, "grid": str(sweep["grid"]), "zip": bool(sweep["zip"]),
        "overrides": str(sweep["overrides"] or "none"), "figures": figures,
        "summary_header": [*keys, *SUMMARY_HEADER],
        "summary_rows": _summary_rows(keys, [entry for entry in summary if entry["sweep"] == name]),
        "runs_header": [*keys, *RUNS_HEADER], "runs": [_run_row(keys, row) for row in these],
    }


def write_sweep_report(out: Path, study: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                       summary: Sequence[Mapping[str, Any]]) -> Path:
    """``index.html`` (self-contained): per sweep, one figure per swept key (the first key of a zipped
    grid), the points' mean ± sd over seeds with a verdict, and every run linked to its report."""
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
