"""``report.html``: one self-contained page (inline CSS, images as data URIs) that opens offline.

Everything comes from the run folder; nothing is recomputed except the gallery's selection, which
is a sort of ``samples.csv``. The page is ``templates/run_report.html`` (it extends ``base.html``, shared
with the sweep page) rendered with autoescaping from the plain data the section functions prepare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from dejavu import artifacts
from dejavu.data.records import ImageTable
from dejavu.metrics.schema import read_metrics, to_json
from dejavu.report.conventional import conventional_data
from dejavu.report.figures import FIGURES, save_png
from dejavu.report.gallery import crops_data, gallery_data, read_samples
from dejavu.report.headline import headlines, outcome_figure
from dejavu.report.one_model import one_model_data
from dejavu.report.reconstruction import reconstruction_data
from dejavu.report.vlm import vlm_data
from dejavu.report.sections import (
    canaries_data, control_data, epoch_note, footer_data, membership_data, numbers_data,
    per_class_data, sanity_data, split_data, training_data,
)
from dejavu.report.templating import data_uri, render as render_template
from dejavu.runs import Run, atomic_path

FIGURE_CAPTIONS = {
    "confidence_curves": "Label inference accuracy among the p % crops each model is most confident about "
                         "(target solid, reference dashed; thin lines: single directions).",
    "partition": "Which model infers the label: memorized = target only.",
    "gap": "Accuracy gap with its bootstrap interval; the control's should straddle zero.",
    "outcomes": "Each test's deciding statistic with its interval, coloured by its decision; inside the green band "
                "an interval clears the model (not detected).",
    "per_class": "Accuracy per foreground class (mean over the two directions).",
    "roc": "ROC of the per-example déjà vu score: attacked crops (members) against control crops "
           "(non-members), FPR on a log scale from the smallest measurable FPR (FPR 0 drawn at the left edge); "
           "dotted: chance.",
}
# Figures shown inside their own section rather than under "Figures".
SECTION_FIGURES = ("roc", "outcomes")
# In the one-model test the control's gap is expected: the kNN vote against the classifier where neither trained.
ONE_MODEL_GAP = ("Gap of the target's kNN vote over the correlation classifier with its bootstrap interval, on A's crops "
                 "and on T's; T's gap is expected (neither trained on T) and is the baseline: the decision is on the "
                 "excess, A's gap minus T's (first figure of the report).")


def write_figures(run: Run, metrics: Mapping[str, Any]) -> dict[str, bytes]:
    """Render every figure to ``figures/<name>.png``; returns the PNG bytes by name."""
    drawn = {**FIGURES, "outcomes": outcome_figure}
    return {name: save_png(draw(metrics), run.figures_dir / f"{name}.png") for name, draw in drawn.items()}


def _figure(name: str, png: bytes, one_model: bool = False) -> dict[str, str]:
    caption = ONE_MODEL_GAP if one_model and name == "gap" else FIGURE_CAPTIONS.get(name, "")
    return {"name": name, "uri": data_uri(png), "caption": caption}


def page_data(run: Run, metrics: Mapping[str, Any], figures: Mapping[str, bytes], table: ImageTable,
              samples: list[dict[str, str]], stage_order: Sequence[str] = ()) -> dict[str, Any]:
    """Everything ``run_report.html`` shows, section by section, as plain data."""
    # ``metrics`` comes through the schema (write_report): every key it requires is there.
    level = float(metrics["ci_level"])
    one_model = bool(metrics.get("one_model"))
    summary = {
        "run_name": run.root.name, "root": str(run.root),
        # Every test's headline, the run's headline test first (metrics.json's outcomes).
        "headlines": headlines(metrics),
        "figure": _figure("outcomes", figures["outcomes"]) if "outcomes" in figures else None,
        "alpha": metrics["alpha"], "k": run.config.attack.k,
        "layer": run.config.attack.layer, "epoch_note": epoch_note(run),
        "sanity": sanity_data(run, metrics),
    }
    return {
        "summary": summary,
        "vlm": vlm_data(run, metrics, table),
        "numbers": numbers_data(metrics, level, len(table.class_names)),
        "one_model": one_model_data(metrics),
        "control": control_data(metrics, level, len(table.class_names)),
        "membership": membership_data(metrics, _figure("roc", figures["roc"]) if "roc" in figures else None),
        "canaries": canaries_data(metrics),
        "reconstruction": reconstruction_data(run, metrics, table),
        "figures": [_figure(name, png, one_model) for name, png in figures.items() if name not in SECTION_FIGURES],
        "per_class": per_class_data(metrics),
        "training": training_data(run),
        "conventional": conventional_data(run),
        "split": split_data(run, metrics, table),
        "crops": crops_data(run, table),
        "gallery": gallery_data(run, table, samples),
        "footer": footer_data(run, stage_order),
    }


def render(run: Run, metrics: Mapping[str, Any], figures: Mapping[str, bytes], table: ImageTable,
           samples: list[dict[str, str]], stage_order: Sequence[str] = ()) -> str:
    """The whole page as a string."""
    return render_template("run_report.html", **page_data(run, metrics, figures, table, samples, stage_order))


def write_report(run: Run, stage_order: Sequence[str] = ()) -> Path:
    """Write ``figures/*.png`` and the self-contained ``report.html``; returns the latter's path.

    ``stage_order``: the pipeline's stage names in execution order, for the footer's timing table
    (stages with a marker in ``stages/`` but not listed come after, sorted)."""
    # Through the schema: an older run folder's file is upgraded to today's shape, a broken one named.
    metrics = to_json(read_metrics(run.root / "metrics.json"))
    table = artifacts.load_table(run)
    samples = read_samples(run.root / "samples.csv", table.ids)
    figures = write_figures(run, metrics)
    page = render(run, metrics, figures, table, samples, stage_order)
    path = run.root / "report.html"
    # Encoded explicitly: the verdict holds non-ASCII text and the locale's encoding may not be UTF-8.
    with atomic_path(path) as tmp:
        tmp.write_bytes(page.encode("utf-8"))
    return path
