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


def verdict(test: Mapping[str, Any], alpha: float, sanity_passed: bool) -> str:
    """One sentence on the judge's test: the target's reconstructions against the reference's."""
    if not sanity_passed:
        return "No verdict: a sanity gate failed (see the summary), so the models' reconstructions mean nothing."
    if not test["n"]:
        return "No verdict: no crop was reconstructed."
    control = test["control"]
    held = (f"on held-out T the gap is {points(control['gap'])} points (p = {p_value(control['mcnemar_p'])})"
            if control["n"] else "T was not reconstructed")
    if test["mcnemar_p"] < alpha and test["gap"] > 0:
        return (f"The target's reconstructions show the true object more often than the reference's: "
                f"{pct(test['target_acc'])} vs {pct(test['reference_acc'])} (p = {p_value(test['mcnemar_p'])} < "
                f"α = {alpha:g}); {held}.")
    return (f"No significant difference at α = {alpha:g}: the target's reconstructions show the true object in "
            f"{pct(test['target_acc'])} of samples, the reference's in {pct(test['reference_acc'])} (p = "
            f"{p_value(test['mcnemar_p'])}); {held}.")


def _samples_uri(images: np.ndarray) -> str:
    """uint8 (S, s, s, 3) samples side by side, enlarged, as one PNG."""
    strip = np.concatenate([np.pad(image, ((0, 0), (0, 2), (0, 0)), constant_values=255) for image in images], axis=1)
    return data_uri(png_of(enlarge(strip)[0]))


def _examples(run: Run, table: ImageTable, rows: list[dict[str, str]], name: str) -> list[dict[str, Any]]:
    drawn = load_reconstruction_samples(run, name)
    where = {str(crop): i for i, crop in enumerate(drawn["ids"].tolist())}
    items = []
    for row in rows:
        i = where[row["id"]]
        position = int(index_of_ids(table.ids, np.array([row["id"]]), "dataset")[0])
        square = [int(row[f"crop_{k}"]) for k in ("x0", "y0", "x1", "y1")]
        items.append({
            "id": row["id"], "direction": row["direction"], "label": class_name(table, row["label"]),
            "figures": crop_figures(table, position, square, row["id"]),
            "target": {"model": row["target_model"], "uri": _samples_uri(drawn[f"samples_{row['target_model']}"][i])},
            "reference": {"model": row["reference_model"],
                          "uri": _samples_uri(drawn[f"samples_{row['reference_model']}"][i])},
        })
    return items


def _reconstructed(run: Run, name: str) -> set[str]:
    return {str(crop) for crop in load_reconstruction_samples(run, name)["ids"].tolist()}


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
    drawn = {name: _reconstructed(run, name) for name in ("A", "B", "T")}
    attacked = [row for row in read_samples(run.root / "samples.csv", table.ids) if row["id"] in drawn[row["direction"]]]
    control = [row for row in read_samples(run.root / "control_samples.csv", table.ids, CONTROL_ATTACKS) if row["id"] in drawn["T"]]
    control.sort(key=lambda row: (-float(row["target_confidence"]), row["id"]))
    sanity = metrics.get("sanity") or {"passed": True}
    judge = test["judge"]["T"]
    return {
        "header": HEADER, "rows": rows, "verdict": verdict(test, float(metrics["alpha"]), bool(sanity["passed"])),
        "judge_accuracy": pct(judge["accuracy"]), "judge_n": int(judge["n"]),
        "fidelity": ", ".join(f"{model} {pct(test['fidelity'][model])}" for model in MODELS if model in test["fidelity"]),
        "fidelity_n": int(test["fidelity"].get("n", 0)), "chance": pct(1 / max(len(table.class_names), 1)),
        "samples": run.config.reconstruct.samples,
        "attacked": _attacked_examples(run, table, most_confident_memorized(attacked, SHOWN_ATTACKED)),
        "control": _examples(run, table, control[:SHOWN_CONTROL], "T"),
    }


def _attacked_examples(run: Run, table: ImageTable, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The attacked examples in their order, each read from its own set's samples (A's or B's)."""
    by_set = {name: _examples(run, table, [row for row in rows if row["direction"] == name], name) for name in MODELS}
    index = {name: iter(items) for name, items in by_set.items()}
    return [next(index[row["direction"]]) for row in rows]
