"""Report section: the conventional metrics (kNN accuracy, linear probe) next to the memorization test."""

from __future__ import annotations

from typing import Any, Mapping

from dejavu.report.format import pct, points
from dejavu.report.templating import render
from dejavu.metrics.schema import read_evaluation, to_json
from dejavu.runs import Run

ROLES = {"A": "target", "B": "reference"}
HEADER = ["model", "kNN train", "kNN test (T)", "kNN gap (points)", "probe train", "probe test (T)", "probe gap (points)"]


def _layer_title(layer: str, attack_layer: str) -> str:
    if layer == "backbone" and attack_layer == "backbone":
        return "backbone (the conventional layer, also the attack's)"
    if layer == "backbone":
        return "backbone (the conventional layer)"
    return f"{layer} (the attack's layer)" if layer == attack_layer else layer


def _row(model: str, numbers: Mapping[str, Any]) -> list[str]:
    knn, probe = numbers.get("knn", {}), numbers.get("linear_probe", {})
    return [f"{model} ({ROLES.get(model, 'model')})",
            pct(knn.get("train")), pct(knn.get("test")), points(knn.get("gap")),
            pct(probe.get("train")), pct(probe.get("test")), points(probe.get("gap"))]


def conventional_data(run: Run) -> dict[str, Any]:
    """From ``evaluation.json``: one table per layer (kNN and linear-probe accuracy on each model's training
    images and on T, and their gap); ``missing`` when the file is absent."""
    path = run.root / "evaluation.json"
    if not path.is_file():
        return {"missing": True}
    evaluation = to_json(read_evaluation(path))
    models: Mapping[str, Mapping[str, Any]] = evaluation.get("models", {})
    attack_layer = str(evaluation.get("attack_layer", run.config.attack.layer))
    layers = list(evaluation.get("layers") or dict.fromkeys(layer for per_model in models.values() for layer in per_model))
    sizes = evaluation.get("sizes", {})
    return {
        "missing": False, "k": evaluation.get("k", ""), "size_x": sizes.get("X"), "size_t": sizes.get("T"),
        "header": HEADER,
        "layers": [{"title": _layer_title(layer, attack_layer),
                    "rows": [_row(model, per_layer[layer]) for model, per_layer in models.items() if layer in per_layer]}
                   for layer in layers],
    }


def conventional_section(run: Run) -> str:
    """The section as HTML (``<h2>`` and its tables, or a short paragraph when evaluation.json is missing)."""
    return render("section_conventional.html", s=conventional_data(run))
