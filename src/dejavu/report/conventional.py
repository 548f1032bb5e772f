"""Report section: the conventional metrics (kNN accuracy, linear probe) next to the memorization test."""

from __future__ import annotations

from typing import Any, Mapping

from dejavu.report.html import esc, pct, points, table_html
from dejavu.runs import Run, read_json

ROLES = {"A": "target", "B": "reference"}


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


def conventional_section(run: Run) -> str:
    """``<h2>`` section from ``evaluation.json``: one table per layer (kNN and linear-probe accuracy on each
    model's training images and on T, and their gap); a short paragraph when the file is missing."""
    path = run.root / "evaluation.json"
    title = "<h2>Conventional metrics: kNN accuracy and linear probe</h2>"
    if not path.is_file():
        return title + ('<p class="muted">Not computed: this run has no evaluation.json '
                        "(run the evaluate stage).</p>")
    evaluation = read_json(path)
    models: Mapping[str, Mapping[str, Any]] = evaluation.get("models", {})
    attack_layer = str(evaluation.get("attack_layer", run.config.attack.layer))
    layers = list(evaluation.get("layers") or dict.fromkeys(layer for per_model in models.values() for layer in per_model))
    sizes = evaluation.get("sizes", {})
    header = ["model", "kNN train", "kNN test (T)", "kNN gap (points)",
              "probe train", "probe test (T)", "probe gap (points)"]
    parts = [
        title,
        f"<p>On full images: kNN accuracy is the majority label of the {esc(evaluation.get('k', ''))} nearest "
        f"images of the public set X{_size(sizes, 'X')}; the linear probe is a linear classifier on the frozen, "
        "standardised features, fitted on the model's own training images. <em>train</em>: the model's own "
        f"training images; <em>test</em>: the held-out set T{_size(sizes, 'T')}; gap = train − test.</p>",
        '<p>These are the numbers used to judge SSL models; they measure how well full images are '
        "classified and do not measure memorization of backgrounds: a model can score the same here as its "
        "reference and still reveal its training images' objects from background-only crops (the déjà vu "
        "score above).</p>",
    ]
    for layer in layers:
        rows = [_row(model, per_layer[layer]) for model, per_layer in models.items() if layer in per_layer]
        parts.append(f"<h3>{esc(_layer_title(layer, attack_layer))}</h3>")
        parts.append(table_html(header, rows, "numbers conventional"))
    return "\n".join(parts)


def _size(sizes: Mapping[str, Any], name: str) -> str:
    return f" ({esc(sizes[name])} images)" if name in sizes else ""
