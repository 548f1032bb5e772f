"""The report's "Reconstruction" section: what each model's decoder draws from the crop, and the number
that says whether the target's drawings show the hidden object more often than the reference's."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from dejavu.artifacts import MODELS, load_reconstruction_samples
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.report.gallery import CONTROL_ATTACKS, class_name, most_confident_memorized, read_samples
from dejavu.report.images import crop_figures, enlarge, png_of
from dejavu.report.format import interval, p_value, pct, points
from dejavu.report.templating import data_uri
from dejavu.runs import Run

HEADER = ["score", "crops", "n", "target", "reference", "gap (points)", "95 % bootstrap interval", "McNemar p",
          "gap, 20 % most confident"]
SHOWN_ATTACKED, SHOWN_CONTROL = 6, 3


def _row(score: str, crops: str, test: Mapping[str, Any]) -> list[str]:
    return [score, crops, str(test["n"]), pct(test["target_acc"]), pct(test["reference_acc"]), points(test["gap"]),
            interval(test["gap_ci95"]), p_value(test["mcnemar_p"]), points(test["gap_top20"])]


def _samples_uri(images: np.ndarray) -> str:
    """uint8 (S, s, s, 3) samples side by side, enlarged, as one PNG."""
    strip = np.concatenate([np.pad(image, ((0, 0), (0, 2), (0, 0)), constant_values=255) for image in images], axis=1)
    return data_uri(png_of(enlarge(strip)[0]))


def _example(table: ImageTable, row: dict[str, str], drawn: Mapping[str, Any]) -> dict[str, Any]:
    """One crop of the section: its image with box, the crop, and each model's samples (``drawn``: its set's
    samples, with ``where`` the row of each id)."""
    i = drawn["where"][row["id"]]
    position = int(index_of_ids(table.ids, np.array([row["id"]]), "dataset")[0])
    square = [int(row[f"crop_{k}"]) for k in ("x0", "y0", "x1", "y1")]
    return {
        "id": row["id"], "direction": row["direction"], "label": class_name(table, row["label"]),
        "figures": crop_figures(table, position, square, row["id"]),
        "target": {"model": row["target_model"], "uri": _samples_uri(drawn[f"samples_{row['target_model']}"][i])},
        "reference": {"model": row["reference_model"], "uri": _samples_uri(drawn[f"samples_{row['reference_model']}"][i])},
    }


def reconstruction_data(run: Run, metrics: Mapping[str, Any], table: ImageTable) -> dict[str, Any] | None:
    """The section's data; None when the run has no reconstruction (``reconstruct.enabled`` false)."""
    test = metrics.get("reconstruction")
    if not test:
        return None
    rows = [_row("judge (classifier of X's images)", "A and B (attacked)", test),
            _row("judge (classifier of X's images)", "T (control)", test["control"])]
    if test.get("colour"):
        rows += [_row("object colour (no classifier)", "A and B (attacked)", test["colour"]),
                 _row("object colour (no classifier)", "T (control)", test["colour"]["control"])]
    drawn = {}
    for name in ("A", "B", "T"):
        drawn[name] = dict(load_reconstruction_samples(run, name))
        drawn[name]["where"] = {str(crop): i for i, crop in enumerate(drawn[name]["ids"].tolist())}
    attacked = [row for row in read_samples(run.root / "samples.csv", table.ids)
                if row["id"] in drawn[row["direction"]]["where"]]
    control = [row for row in read_samples(run.root / "control_samples.csv", table.ids, CONTROL_ATTACKS)
               if row["id"] in drawn["T"]["where"]]
    control.sort(key=lambda row: (-float(row["target_confidence"]), row["id"]))
    judge = test["judge"]["T"]
    return {
        "header": HEADER, "rows": rows, "sentence": metrics["outcomes"]["reconstruction"]["sentence"],
        "decision": metrics["outcomes"]["reconstruction"]["decision"],
        "judge_accuracy": pct(judge["accuracy"]), "judge_n": int(judge["n"]),
        "fidelity": ", ".join(f"{model} {pct(test['fidelity'][model])}" for model in MODELS if model in test["fidelity"]),
        "fidelity_n": int(test["fidelity"].get("n", 0)), "chance": pct(1 / max(len(table.class_names), 1)),
        "samples": run.config.reconstruct.samples, "neighbours": run.config.reconstruct.neighbours,
        "guidance": f"{run.config.reconstruct.guidance:g}",
        "attacked": [_example(table, row, drawn[row["direction"]])
                     for row in most_confident_memorized(attacked, SHOWN_ATTACKED)],
        "control": [_example(table, row, drawn["T"]) for row in control[:SHOWN_CONTROL]],
    }

