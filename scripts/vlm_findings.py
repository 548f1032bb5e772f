"""The vision-language mitigations table of docs/findings.md, from a finished run of
configs/studies/clip_mitigations.yaml.

    python scripts/vlm_findings.py runs/clip_mitigations

Reads the sweep's ``sweep.csv`` (one row per point and seed; the ``vlm_*`` columns are metrics.json["vlm"]'s).
Per sweep and value: PPG and PRG (mean ± sd over seeds), the seeds whose vision-language outcome is detected
(both gaps positive with p < alpha), the control's gaps, and the models' utility: caption -> own image recall@k among T's images (mean of
both models and the seeds, from each point's metrics.json; chance k / |T|); per sweep, Spearman's rho of PPG and of PRG against the swept value over all
rows (seeds pooled: each seed re-draws data, split and training, so rows are independent).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

from scipy.stats import spearmanr

from dejavu.metrics.schema import read_metrics

KEYS = {"caption_mask": "train.clip.caption_mask", "epochs": "train.epochs", "temperature": "train.clip.temperature",
        "weight_decay": "train.weight_decay"}


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.3f} ± {sd:.3f}"


def main(folder: str) -> None:
    with open(Path(folder) / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    print("| sweep | value | PPG | PRG | significant seeds (PPG and PRG > 0, p < α) | control PPG / PRG | "
          "retrieval on T |")
    print("|---|---|---|---|---|---|---|")
    trends = []
    for sweep, key in KEYS.items():
        mine = [r for r in rows if r["sweep"] == sweep]
        if not mine:
            continue
        for value in sorted({float(r[key]) for r in mine}):
            at = [r for r in mine if float(r[key]) == value]
            ppg, prg = [float(r["vlm_ppg"]) for r in at], [float(r["vlm_prg"]) for r in at]
            # Each point's vision-language outcome (the excess for a text reference), upgraded from older files.
            outcomes = [read_metrics((Path(folder) / r["report"]).with_name("metrics.json")).outcomes["vlm"] for r in at]
            significant = sum(o.decision == "detected" for o in outcomes)
            control = (f"{statistics.mean(float(r['vlm_control_ppg']) for r in at):+.3f} / "
                       f"{statistics.mean(float(r['vlm_control_prg']) for r in at):+.3f}")
            retrieval = [json.loads((Path(folder) / r["report"]).with_name("metrics.json").read_text())["vlm"]["retrieval"]
                         for r in at]
            utility = statistics.mean((x["A"] + x["B"]) / 2 for x in retrieval)
            print(f"| {sweep} | {value:g} | {_mean_sd(ppg)} | {_mean_sd(prg)} | {significant}/{len(at)} | {control} | "
                  f"{utility:.1%} |")
        values = [float(r[key]) for r in mine]
        for measure in ("ppg", "prg"):
            rho, p = spearmanr(values, [float(r[f"vlm_{measure}"]) for r in mine])
            trends.append(f"{sweep}: Spearman rho of {measure.upper()} with the value {rho:+.2f} (p {p:.2g}, n = {len(mine)})")
    print()
    for line in trends:
        print(f"- {line}")


if __name__ == "__main__":
    main(sys.argv[1])
