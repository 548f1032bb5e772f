"""The sweep's page: paper-style figures against the first grid key, and a table linking every point's report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dejavu.report.figures import PART_COLOURS, REFERENCE_COLOUR, TARGET_COLOUR, _figure, _number, save_png
from dejavu.report.html import CSS, esc, img_tag
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


def sweep_figure(rows: Sequence[Mapping[str, Any]], key: str):
    """Four panels against ``key``: accuracies (target solid, reference dashed) at p = 20 % and 100 %;
    partition shares stacked; the gap with its 95 % interval; kNN / linear-probe accuracy on T."""
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
    low = 100 * _series(groups, values, "gap_ci_low")[1]
    high = 100 * _series(groups, values, "gap_ci_high")[2]
    axes[2].plot(x, gap, color="#d62728", marker="o", label="gap (target − reference)")
    axes[2].fill_between(x, low, high, color="#d62728", alpha=0.2, label="95 % interval (widest over seeds)")
    axes[2].plot(x, 100 * _series(groups, values, "control_gap")[0], color="#7f7f7f", ls=":", marker=".", label="control gap")
    axes[2].axhline(0, color="black", lw=0.6)
    axes[2].set_ylabel("points")
    axes[2].legend(fontsize=6)
    for metric, colour, label in (("A_backbone_knn_test", "#17becf", "kNN on T"),
                                  ("A_backbone_linear_probe_test", "#bcbd22", "linear probe on T")):
        axes[3].plot(x, 100 * _series(groups, values, metric)[0], color=colour, marker="o", label=label)
    axes[3].set_ylabel("accuracy of model A, backbone (%)")
    axes[3].legend(fontsize=6)
    for ax in axes:
        ax.set_xticks(x, [str(v) for v in values], fontsize=7)
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    return figure


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Cells arrive escaped (the last one is a link)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="numbers"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_sweep_report(out: Path, study: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Path:
    """``index.html`` (self-contained) with one figure per grid key and the table of points."""
    figures = []
    for key in study["grid"]:
        png = save_png(sweep_figure(rows, key), out / "figures" / f"sweep_{key.replace('.', '_')}.png")
        figures.append(f"<h2>Against {esc(key)}</h2>{img_tag(png, key)}")
    keys = list(study["grid"]) + ["seed"]
    header = [*keys, "target / reference acc", "gap [95 % CI]", "McNemar p", "memorized", "AUC", "control gap",
              "kNN / probe on T (A)", "report"]
    table = []
    for row in rows:
        cells = [
            *(json.dumps(row[key]) if not isinstance(row[key], str) else row[key] for key in keys),
            f"{100 * _number(row['target_acc']):.1f} % / {100 * _number(row['reference_acc']):.1f} %",
            f"{100 * _number(row['gap']):+.1f} [{100 * _number(row['gap_ci_low']):+.1f}, {100 * _number(row['gap_ci_high']):+.1f}]",
            f"{_number(row['mcnemar_p']):.2g}", f"{100 * _number(row['memorized']):.1f} %", f"{_number(row.get('auc')):.3f}",
            f"{100 * _number(row['control_gap']):+.1f}",
            f"{100 * _number(row.get('A_backbone_knn_test')):.1f} % / {100 * _number(row.get('A_backbone_linear_probe_test')):.1f} %",
        ]
        table.append([*(esc(cell) for cell in cells), f'<a href="{esc(row["report"])}">report</a>'])
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Déjà vu sweep – {esc(out.name)}</title><style>{CSS}</style></head><body>",
        "<h1>Déjà vu sweep</h1>",
        f"<p>Base config {esc(study.get('config') or 'built-in defaults')}; overrides {esc(study.get('overrides'))}; "
        f"grid {esc(study['grid'])}; {esc(study['seeds'])} seed(s) per point. Figures pool the other grid keys and "
        "the seeds (lines: mean; shaded: min to max over them; the gap's band spans the widest bootstrap interval).</p>",
        *figures,
        "<h2>Points</h2>",
        _table(header, table),
        "</body></html>",
    ])
    path = out / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_bytes(page.encode("utf-8"))
    return path
