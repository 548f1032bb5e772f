"""The data of the run report's sections, from the run folder (``metrics.json``, ``split.json``,
``history.json``, ``stages/*.done.json``, ...): plain strings, numbers, lists and dicts, laid out by the
``templates/section_*.html`` templates."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from dejavu import artifacts
from dejavu.data.records import ImageTable
from dejavu.metrics.schema import SUMMARY_ROWS
from dejavu.report.figures import save_png, training_curves
from dejavu.report.format import (
    auc, integer, number_or_nan, pct, points, signed3, value_range,
)
from dejavu.report.templating import data_uri, render
from dejavu.runs import Run, read_json

Columns = list[tuple[str, Mapping[str, Any]]]


# Sanity gates ------------------------------------------------------------------------------------
def sanity_data(run: Run, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the sanity checks passed (None: a run folder from before they existed) and every check."""
    outcome = metrics.get("sanity")
    path = run.root / "sanity.json"
    checks = artifacts.load_sanity(run)["checks"] if outcome is not None and path.is_file() else []
    return {
        "passed": None if outcome is None else bool(outcome["passed"]),
        "failures": list(outcome["failures"]) if outcome else [],
        "checks": [{"subject": c["subject"], "name": c["name"], "passed": c["passed"], "detail": c["detail"]}
                   for c in checks],
    }


# Numbers -----------------------------------------------------------------------------------------
def summary_rows(level: float = 0.95) -> list[dict[str, str]]:
    """:data:`~dejavu.metrics.schema.SUMMARY_ROWS` as the numbers tables show them (the interval's
    label names its level, ``metrics.ci_level``)."""
    rows = []
    for row in SUMMARY_ROWS:
        label = row.label
        if row.format == "interval" and row.label.startswith("gap "):
            label = f"gap {100 * level:.0f} % bootstrap interval"
        rows.append({"label": label, "key": row.key, "format": row.format})
    return rows


def numbers_data(metrics: Mapping[str, Any], level: float) -> dict[str, Any]:
    directions = [(f"direction {name}", detail) for name, detail in metrics["directions"].items()]
    return {"rows": summary_rows(level), "pooled": [("pooled attack", metrics)], "directions": directions}


def control_data(metrics: Mapping[str, Any], level: float) -> dict[str, Any]:
    control = metrics["control"]
    if not control["conclusive"]:
        state = "inconclusive"
    else:
        state = "zero" if control["indistinguishable_from_zero"] else "nonzero"
    columns: Columns = [("control pooled", control)] + [
        (f"{name} ({'T1 plays A: target A' if name == 'T1' else 'T2 plays B: target B'})", detail)
        for name, detail in control["directions"].items()
    ]
    return {"state": state, "n_attacked": control["n_attacked"], "gap": control["gap"],
            "p": control["mcnemar_p"], "rows": summary_rows(level), "columns": columns}


def membership_data(metrics: Mapping[str, Any], figure: Mapping[str, str] | None) -> dict[str, Any]:
    """AUC and TPR at low FPR of the per-example déjà vu score, attacked crops vs control crops (``roc``)."""
    roc = metrics.get("roc")
    if not roc:
        return {"present": False}
    level = number_or_nan(roc["ci_level"])
    min_fpr = number_or_nan(roc["min_measurable_fpr"])
    rows = [["AUC (0.5 = chance)", auc(roc["auc"]), value_range(roc["auc_ci"], auc)]]
    for fpr, name in ((0.01, "1 %"), (0.001, "0.1 %")):
        key = f"tpr_at_fpr_{fpr:g}"
        if roc.get(key) is None:  # optional in the schema: a file of an older version may lack the 0.1 % point
            continue
        label = f"TPR at {name} FPR (chance: {name})"
        if not math.isnan(min_fpr) and fpr < min_fpr:
            label += " — not measurable, TPR at FPR 0"
        rows.append([label, pct(roc.get(key)), value_range(roc.get(key + "_ci"), pct)])
    return {"present": True, "rows": rows, "level_label": f"{100 * level:.0f} % bootstrap interval",
            "n_members": roc["n_members"], "n_nonmembers": roc["n_nonmembers"],
            "min_fpr": "n/a" if math.isnan(min_fpr) else f"{min_fpr:.3g}", "figure": figure}


CANARY_HEADER = ["", "crops", "target acc", "reference acc", "gap (points)", "memorized", "mean déjà vu score",
                 "AUC vs T", "TPR at 1 % FPR vs T"]
CANARY_GROUPS = (("canaries", "canaries (planted)"), ("ordinary", "ordinary A images"), ("control", "T (control)"))


def canaries_data(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """Self-check with planted memorization (``split.canaries``): canaries vs ordinary A images vs T; None when off."""
    canaries = metrics.get("canaries")
    if not canaries:
        return None
    roc = canaries.get("roc", {})
    rows = []
    for key, label in CANARY_GROUPS:
        group, versus = canaries.get(key, {}), roc.get(f"{key}_vs_T", {})
        rows.append([
            label, integer(group.get("n")), pct(group.get("target_acc")), pct(group.get("reference_acc")),
            points(group.get("gap")), pct(group.get("memorized")), signed3(group.get("mean_dejavu_score")),
            f"{auc(versus.get('auc'))} ({value_range(versus.get('auc_ci'), auc)})" if versus else "—",
            pct(versus.get("tpr_at_fpr_0.01")) if versus else "—",
        ])
    return {"ids": canaries.get("ids"), "repeats": canaries.get("repeats"), "header": CANARY_HEADER, "rows": rows}


def canary_section(metrics: Mapping[str, Any]) -> str:
    """The canaries section as HTML; empty when the run planted none."""
    data = canaries_data(metrics)
    return render("section_canaries.html", s=data) if data else ""


def per_class_data(metrics: Mapping[str, Any]) -> dict[str, Any]:
    rows = [[e["class"], e["n_attacked"], pct(e["target_acc"]), pct(e["reference_acc"]),
             points(number_or_nan(e["target_acc"]) - number_or_nan(e["reference_acc"])),
             pct(e.get("memorized")), pct(e.get("correlated")), pct(e.get("misrepresented")),
             pct(e.get("unassociated"))] for e in metrics.get("per_class") or []]
    header = ["class", "attacked", "target acc", "reference acc", "gap (points)", "memorized", "correlated",
              "misrepresented", "unassociated"]
    return {"header": header, "rows": rows}


# Split -------------------------------------------------------------------------------------------
ROLES_OF_SETS = {"A": "target's training set, attacked", "B": "reference's training set, attacked",
                 "shared": "in both training sets, never attacked", "X": "public set (neighbours)",
                 "T": "held out (control)"}


def split_data(run: Run, metrics: Mapping[str, Any], table: ImageTable) -> dict[str, Any]:
    # Checked against the catalog, with its sizes and checks recomputed: the page shows what holds now.
    split = artifacts.read_split(run, table).payload
    sizes = metrics.get("split_sizes") or split.get("sizes", {})
    skipped = metrics.get("crops_skipped", {})
    checks = split.get("checks", {})
    counts = checks.get("per_class_counts", {})
    rows = [[name, ROLES_OF_SETS.get(name, ""), sizes.get(name, ""),
             _count_range(counts.get(name)), skipped.get(name, "-")] for name in sizes]
    how = ("the paper's partition (boxed images halved between A and B, unboxed images shared, X and T from "
           "the rest)" if split.get("scheme", "balanced") == "paper" else "balanced per class")
    check_rows = [[f"overlap {pair}", count, "ok" if count == 0 else "FAIL"]
                  for pair, count in checks.get("pairwise_disjoint", {}).items()]
    check_rows.append(["all ids in dataset", checks.get("all_ids_in_dataset"),
                       "ok" if checks.get("all_ids_in_dataset") else "FAIL"])
    return {"how": how, "per_class": json.dumps(split.get("per_class", {})), "rows": rows,
            "checks_ok": bool(checks.get("ok")), "check_rows": check_rows,
            "leakage": leakage_data(split.get("leakage")), "reasons": _skip_reasons(run, table)}


def _count_range(counts: Sequence[int] | None) -> str:
    if not counts:
        return ""
    present = [c for c in counts if c] or [0]
    return f"{min(present)}" if min(present) == max(present) else f"{min(present)}–{max(present)}"


def leakage_data(leakage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The leakage checks of the split: exact duplicates (content hash) and near-duplicates (perceptual hash)."""
    if not leakage:
        return None
    exact, near = leakage.get("exact", {}), leakage.get("near", {})
    rows = [["exact duplicates across sets (SHA-256 of the file)", exact.get("pairs", 0),
             "ok" if not exact.get("pairs") else "FAIL"]]
    if near.get("enabled", True):
        rows.append([f"near-duplicates across sets (perceptual hash, ≤ {near.get('max_distance')} bits)",
                     near.get("pairs", 0), "ok" if not near.get("pairs") else "FAIL"])
    else:
        rows.append(["near-duplicates across sets", "check disabled", "-"])
    rows.append(["duplicates dropped before splitting", leakage.get("dropped_before_split", 0), "-"])
    examples = [*exact.get("examples", []), *near.get("examples", [])][:10]
    return {"ok": bool(leakage.get("ok")), "rows": rows,
            "examples": [" ".join(str(v) for v in example) for example in examples]}


def leakage_html(leakage: Mapping[str, Any] | None) -> str:
    return render("section_leakage.html", leakage=leakage_data(leakage))


def _skip_reasons(run: Run, table: ImageTable) -> list[list[Any]]:
    crops = artifacts.load_crops(run, table)
    skipped = crops["kept"] == 0
    counts: dict[tuple[str, str], int] = {}
    for name, reason in zip(crops["set"][skipped].tolist(), crops["reason"][skipped].tolist()):
        counts[(name, reason)] = counts.get((name, reason), 0) + 1
    return [[name, reason, n] for (name, reason), n in sorted(counts.items())]


# Run ---------------------------------------------------------------------------------------------
def epoch_note(run: Run) -> str:
    epoch, final = run.config.attack.epoch, run.config.train.epochs
    return f" of the weights after epoch {epoch} of {final}" if epoch and epoch != final else ""


def training_data(run: Run) -> dict[str, Any]:
    """The recipe both models share, and each model's loss curve and throughput (from ``history.json``)."""
    t = run.config.train
    histories = {model: artifacts.load_history(run, model)
                 for model in ("A", "B") if (run.model_dir(model) / "history.json").is_file()}
    recipe = (f"{t.method} · {t.backbone} · projector {t.projector} · {t.epochs} epochs · batch {t.batch_size} · "
              f"{t.optimizer} lr {t.lr:g}{' × batch/256' if t.lr_scaling == 'linear' else ''} · {t.precision}")
    rows = [[f"{model} ({'target' if model == 'A' else 'reference'})", h.get("images", ""),
             f"{h['loss'][0]:.4g} → {h['loss'][-1]:.4g}" if h.get("loss") else "",
             f"{h.get('images_per_second_this_session', 0):.0f}",
             f"{h.get('processes', 1)} × {h.get('device', 'cpu')}"] for model, h in histories.items()]
    losses = {model: h["loss"] for model, h in histories.items() if h.get("loss")}
    loss_uri = None
    if losses:
        loss_uri = data_uri(save_png(training_curves(losses, t.method), run.figures_dir / "training_loss.png"))
    return {"recipe": recipe, "rows": rows, "loss_uri": loss_uri}


def _timing(marker: Path) -> str:
    try:
        payload = json.loads(marker.read_text())
    except json.JSONDecodeError:
        payload = {}
    seconds = payload.get("seconds")
    # A sweep's point may take a stage from another point with the same fingerprint (stage reuse).
    source = f" (computed in {Path(payload['adopted_from']).name})" if payload.get("adopted_from") else ""
    return ("n/a" if seconds is None else f"{float(seconds):.1f}") + source


def stage_timings(run: Run, stage_order: Sequence[str] = ()) -> list[list[str]]:
    """(stage, seconds) of every stage with a marker: those of ``stage_order`` in that order, then any
    other marker found in ``stages/`` (sorted by name)."""
    suffix = ".done.json"
    found = {path.name[: -len(suffix)] for path in (run.root / "stages").glob(f"*{suffix}")}
    order = [*stage_order, *sorted(found - set(stage_order))]
    return [[stage, _timing(run.marker(stage))] for stage in order if run.marker(stage).is_file()]


def footer_data(run: Run, stage_order: Sequence[str] = ()) -> dict[str, Any]:
    meta = read_json(run.root / "run.json") if (run.root / "run.json").is_file() else {}
    seeds = [["seed", meta.get("seed", run.config.seed)]]
    seeds += [[f"derived: {name}", value] for name, value in meta.get("derived_seeds", run.seeds).items()]
    versions = [[key, meta[key]] for key in ("python", "torch", "numpy", "machine", "processor_count") if key in meta]
    return {"seeds": seeds, "versions": versions, "timings": stage_timings(run, stage_order),
            "config": json.dumps(run.config.to_dict(), indent=2)}

