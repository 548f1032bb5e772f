"""The report's "Vision-language test" section (CLIP runs): the PPG / PRG table, and for the records where the
target's retrieved public images reveal the most, the caption, the training image and each model's images."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from dejavu.artifacts import load_vlm_neighbours, load_vlm_samples
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.report.format import auc, p_value, pct, signed3
from dejavu.report.images import annotated_image, enlarge, png_of
from dejavu.report.templating import data_uri
from dejavu.runs import Run

HEADER = ["records", "n", "PPG", "interval", "sign-test p", "PRG", "interval", "sign-test p", "precision (target / ref.)",
          "recall (target / ref.)", "recall-gap AUC"]
SHOWN_NEIGHBOURS = 5


def _interval(bounds) -> str:
    return f"[{signed3(bounds[0])}, {signed3(bounds[1])}]"


def _row(name: str, gaps: Mapping[str, Any]) -> list[str]:
    return [name, str(gaps["n"]), signed3(gaps["ppg"]), _interval(gaps["ppg_ci"]), p_value(gaps["ppg_p"]),
            signed3(gaps["prg"]), _interval(gaps["prg_ci"]), p_value(gaps["prg_p"]),
            f"{pct(gaps['target_precision'])} / {pct(gaps['reference_precision'])}",
            f"{pct(gaps['target_recall'])} / {pct(gaps['reference_recall'])}", auc(gaps["recall_gap_auc"])]


def _strip(table: ImageTable, rows: np.ndarray) -> str:
    """The retrieved public images side by side, enlarged."""
    pixels = np.concatenate([np.asarray(table.images[r]) for r in rows], axis=1)
    return data_uri(png_of(enlarge(pixels)[0]))


def _objects(names: str, true: set[str]) -> list[dict[str, Any]]:
    return [{"name": name, "hit": name in true} for name in names.split(";") if name]


def vlm_data(run: Run, metrics: Mapping[str, Any], table: ImageTable) -> dict[str, Any] | None:
    """Everything ``section_vlm.html`` shows, or None when the run is not a CLIP run."""
    vlm = metrics.get("vlm")
    if not vlm:
        return None
    rows = [_row(f"pooled ({' and '.join(vlm['directions'])})", vlm), *(_row(f"direction {name}", gaps) for name, gaps in vlm["directions"].items()),
            _row("control T (seen by neither)", vlm["control"])]
    top = [[f"{float(f) * 100:g} %", str(t["n"]), signed3(t["ppg"]), signed3(t["prg"])] for f, t in vlm["top"].items()]
    excess = vlm.get("excess")
    if excess:  # the text-only reference: the test is on the gap beyond the control's
        rows.append(["beyond the control (train − T)", "", signed3(excess["ppg"]), _interval(excess["ppg_ci"]),
                     p_value(excess["ppg_p"]), signed3(excess["prg"]), _interval(excess["prg_ci"]),
                     p_value(excess["prg_p"]), "", "", ""])
    samples = [s for s in load_vlm_samples(run) if s["set"] != "T"]
    better = [s for s in samples if float(s["target_recall"]) > float(s["reference_recall"])]
    better.sort(key=lambda s: -float(s["target_confidence"]))
    shown = []
    if table.images is not None and better:
        neighbours = load_vlm_neighbours(run)
        public = index_of_ids(table.ids, neighbours["public_ids"], "vlm/neighbours.npz public ids")
        for sample in better[: run.config.vlm.gallery]:
            name, target, reference = sample["set"], sample["target_model"], sample["reference_model"]
            at = int(np.flatnonzero(neighbours[f"ids_{name}"] == sample["id"])[0])
            position = int(index_of_ids(table.ids, np.array([sample["id"]]))[0])
            true = set(sample["objects"].split(";"))
            shown.append({
                "id": sample["id"], "caption": sample["caption"], "objects": sorted(true),
                "image": data_uri(annotated_image(np.asarray(table.images[position]), table.boxes_of(position), (0, 0, 0, 0))),
                "models": [{"role": role, "model": model, "recall": pct(sample[f"{role}_recall"]),
                            "precision": pct(sample[f"{role}_precision"]), "objects": _objects(sample[f"{role}_objects"], true),
                            "uri": _strip(table, public[neighbours[f"neighbours_{name}_{model}"][at][:SHOWN_NEIGHBOURS]]),
                            "label": "text-only reference" if model == "text" else f"model {model}"}
                           for role, model in (("target", target), ("reference", reference))],
            })
    outcome = metrics["outcomes"]["vlm"]
    return {"sentence": outcome["sentence"], "decision": outcome["decision"], "k": vlm["k"],
            "text_reference": vlm.get("reference") == "text",
            "header": HEADER, "rows": rows, "top": top, "retrieval": vlm["retrieval"], "shown": shown,
            "neighbours": SHOWN_NEIGHBOURS, "n_better": len(better), "n_records": len(samples)}
