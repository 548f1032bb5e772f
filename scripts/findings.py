"""Check the paper's findings (a)-(f) on a finished run of configs/studies/paper_findings.yaml.

    python scripts/findings.py runs/paper_findings          # prints the markdown table of docs/findings.md

Reads the sweep's ``sweep.csv`` (one row per point and seed). Each finding is judged by a stated rule on
all seeds' rows, so the table says what held, what did not, and by how much:

(a) the base point (the demo recipe at the projector): gap > 0 with McNemar p < 0.01 in every seed;
(b) epochs: Spearman correlation of gap with the epoch over all rows > 0 with p < 0.05;
(c) set size: Spearman correlation of gap with images per class < 0 with p < 0.05;
(d) layer: gap at the projector >= gap at the backbone, in the mean over seeds (paired by seed);
(e) VICReg invariance weight: Spearman correlation of gap with the weight, p < 0.05, either direction (the
    paper reports that the weight matters; which way it moves the gap could not be confirmed from the sources
    at hand, see docs/findings.md);
(f) conventional metrics: none of model A's kNN / linear-probe accuracy on T, or their train - T gaps, at
    the backbone, has |Spearman rho| >= 0.5 with p < 0.05 against the déjà vu gap over the rows of the
    epoch, set-size and invariance sweeps (where the gap moves).
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from scipy.stats import spearmanr

CONVENTIONAL = {"backbone_knn_test": "kNN accuracy on T", "backbone_linear_probe_test": "linear probe on T",
                "backbone_knn_gap": "kNN train - T gap", "backbone_linear_probe_gap": "probe train - T gap"}


def _rows(sweep: str, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [row for row in rows if row["sweep"] == sweep]


def _points(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    """'value: mean ± sd' of the gap (points) at each value of ``key``, in order."""
    values = dict.fromkeys(row[key] for row in rows)
    return "; ".join(f"{value}: " + _mean_sd([100 * float(row["gap"]) for row in rows if row[key] == value], signed=True)
                     for value in values)


def _trend(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float]:
    rho, p = spearmanr([float(row[key]) for row in rows], [float(row["gap"]) for row in rows])
    return float(rho), float(p)


def findings(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One entry per finding: what the paper says, what was measured, and whether it held."""
    out = []
    base = [row for row in _rows("layer", rows) if row["attack.layer"] == "projector"]
    significant = [float(row["gap"]) > 0 and float(row["mcnemar_p"]) < 0.01 for row in base]
    gaps = [100 * float(row["gap"]) for row in base]
    out.append({
        "finding": "(a) déjà vu exists: gap > 0, p < 0.01",
        "measured": "gap " + ", ".join(f"{100 * float(r['gap']):+.1f} (p {float(r['mcnemar_p']):.1g})" for r in base)
                    + f" over seeds {', '.join(r['seed'] for r in base)}; mean {statistics.mean(gaps):+.1f}; "
                    "control " + ", ".join(f"{100 * float(r['control_gap']):+.1f}" for r in base),
        "held": f"yes ({sum(significant)}/{len(base)} seeds)" if all(significant) else
                f"partly ({sum(significant)}/{len(base)} seeds)" if any(significant) else "no",
    })
    for label, sweep, key, sign in (("(b) gap grows with epochs", "epochs", "attack.epoch", 1),
                                    ("(c) gap shrinks as the training set grows", "set_size", "split.a_per_class", -1),
                                    ("(e) VICReg invariance weight changes the gap", "invariance",
                                     "train.vicreg.sim_weight", 0)):
        chosen = _rows(sweep, rows)
        rho, p = _trend(chosen, key)
        if sign == 0:  # either direction counts
            held = f"yes ({'falls' if rho < 0 else 'rises'} with it)" if p < 0.05 else "no"
        else:
            held = "yes" if sign * rho > 0 and p < 0.05 else (
                "direction only (not significant)" if sign * rho > 0 else
                "no (opposite direction, significant)" if p < 0.05 else "no")
        out.append({"finding": label, "measured": f"{_points(chosen, key)}; Spearman rho {rho:+.2f} (p {p:.2g}, "
                                                  f"n = {len(chosen)})", "held": held})
    layer = _rows("layer", rows)
    by_seed = {}
    for row in layer:
        by_seed.setdefault(row["seed"], {})[row["attack.layer"]] = 100 * float(row["gap"])
    differences = [layers["projector"] - layers["backbone"] for layers in by_seed.values()]
    mean_difference = statistics.mean(differences)
    out.append({
        "finding": "(d) projector gap >= backbone gap",
        "measured": f"{_points(layer, 'attack.layer')}; projector - backbone per seed "
                    + ", ".join(f"{d:+.1f}" for d in differences),
        "held": ("yes, every seed" if min(differences) >= 0 else "yes, in the mean") if mean_difference >= 0 else "no",
    })
    moving = [row for row in rows if row["sweep"] in ("epochs", "set_size", "invariance")]
    tracked = []
    for column, name in CONVENTIONAL.items():
        if len({row[column] for row in moving}) == 1:
            tracked.append((f"{name} (constant at {float(moving[0][column]):.3f})", math.nan, math.nan))
            continue
        rho, p = spearmanr([float(row[column]) for row in moving], [float(row["gap"]) for row in moving])
        tracked.append((name, float(rho), float(p)))
    # A constant metric (e.g. a probe at 100 % on its training images) correlates with nothing: rho is nan.
    tracking = [name for name, rho, p in tracked if abs(rho) >= 0.5 and p < 0.05]
    out.append({
        "finding": "(f) kNN / linear probe do not track the gap",
        "measured": "Spearman rho with the gap over the epoch, set-size and invariance rows (n = "
                    f"{len(moving)}): " + "; ".join(name if math.isnan(rho) else f"{name} {rho:+.2f} (p {p:.2g})" for name, rho, p in tracked),
        "held": "yes" if not tracking else f"no: {', '.join(tracking)} track it",
    })
    return sorted(out, key=lambda entry: entry["finding"])


NEEDED = {"epochs": "attack.epoch", "set_size": "split.a_per_class", "layer": "attack.layer",
          "invariance": "train.vicreg.sim_weight"}


def missing(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What a partial or foreign sweep lacks for the findings (empty: nothing)."""
    problems = [f"sweep '{name}' (over {key})" for name, key in NEEDED.items() if not _rows(name, rows)]
    columns = ["gap", "mcnemar_p", "control_gap", *CONVENTIONAL]
    for row in rows:
        if row["sweep"] in NEEDED:
            empty = [c for c in (*columns, NEEDED[row["sweep"]]) if not row.get(c)]
            if empty:
                problems.append(f"values {', '.join(empty)} of point {row['sweep']} seed {row['seed']}")
    for name in ("epochs", "set_size", "invariance"):  # a trend needs three values; a spread, two seeds
        chosen = _rows(name, rows)
        values = {row[NEEDED[name]] for row in chosen}
        seeds = {row["seed"] for row in chosen}
        if chosen and (len(values) < 3 or len(seeds) < 2):
            problems.append(f"at least 3 values of {NEEDED[name]} and 2 seeds in sweep '{name}' "
                            f"(found {len(values)} and {len(seeds)})")
    layers = {(row["seed"], row["attack.layer"]) for row in _rows("layer", rows)}
    for seed in {seed for seed, _ in layers}:
        problems += [f"layer {layer} of seed {seed}" for layer in ("backbone", "projector") if (seed, layer) not in layers]
    return problems


def markdown(entries: Sequence[Mapping[str, str]]) -> str:
    lines = ["| finding | measured (gap in points, mean ± sd over seeds) | held |", "|---|---|---|"]
    lines += [f"| {e['finding']} | {e['measured']} | {e['held']} |" for e in entries]
    return "\n".join(lines)


def _mean_sd(values: Sequence[float], signed: bool = False) -> str:
    sd = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):{'+' if signed else ''}.1f}{sd}"


def sweep_tables(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per sweep, one line per value: means ± sd over seeds of the gap, accuracies and conventional metrics."""
    out = []
    columns = (("gap", "gap", True), ("target_acc", "target acc", False), ("reference_acc", "reference acc", False),
               ("memorized", "memorized", False), ("auc", "AUC x 100", False),
               ("backbone_knn_test", "kNN on T", False), ("backbone_linear_probe_test", "probe on T", False),
               ("backbone_knn_gap", "kNN train - T", True), ("backbone_linear_probe_gap", "probe train - T", True))
    for name, key in NEEDED.items():
        chosen = _rows(name, rows)
        out += [f"**{name}** ({key})", "",
                f"| {key} | seeds significant | " + " | ".join(label for _, label, _ in columns) + " |",
                "|---" * (len(columns) + 2) + "|"]
        for value in dict.fromkeys(row[key] for row in chosen):
            at = [row for row in chosen if row[key] == value]
            significant = sum(float(r["gap"]) > 0 and float(r["mcnemar_p"]) < float(r.get("alpha") or 0.01) for r in at)
            cells = [_mean_sd([100 * float(r[column]) for r in at], signed) for column, _, signed in columns]
            out.append(f"| {value} | {significant}/{len(at)} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    path = Path(argv[0]) / "sweep.csv"
    if not path.is_file():
        print(f"{path} does not exist: run the study first", file=sys.stderr)
        return 2
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    problems = missing(rows)
    if problems:
        print(f"{path} is not a finished run of configs/studies/paper_findings.yaml; it lacks: "
              + "; ".join(problems[:10]), file=sys.stderr)
        return 2
    print(markdown(findings(rows)))
    print()
    print(sweep_tables(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
