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
    knn, probe = numbers["knn"], numbers["linear_probe"]
    return [f"{model} ({ROLES.get(model, 'model')})",
            pct(knn["train"]), pct(knn["test"]), points(knn["gap"]),
            pct(probe["train"]), pct(probe["test"]), points(probe["gap"])]


def conventional_data(run: Run) -> dict[str, Any]:
    """From ``evaluation.json``: one table per layer (kNN and linear-probe accuracy on each model's training
    images and on T, and their gap); ``missing`` when the file is absent."""
    path = run.root / "evaluation.json"
    if not path.is_file():
        return {"missing": True}
    # Through the schema: every key below is there, whichever version wrote the file.
    evaluation = to_json(read_evaluation(path))
    models: Mapping[str, Mapping[str, Any]] = evaluation["models"]
    attack_layer, layers, sizes = evaluation["attack_layer"], evaluation["layers"], evaluation["sizes"]
    return {
        "missing": False, "k": evaluation["k"], "size_x": sizes.get("X"), "size_t": sizes.get("T"),
        "header": HEADER,
        "layers": [{"title": _layer_title(layer, attack_layer),
                    "rows": [_row(model, per_layer[layer]) for model, per_layer in models.items() if layer in per_layer]}
                   for layer in layers],
    }


def conventional_section(run: Run) -> str:
    """The section as HTML (``<h2>`` and its tables, or a short paragraph when evaluation.json is missing)."""
    return render("section_conventional.html", s=conventional_data(run))
