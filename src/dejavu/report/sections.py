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
from dejavu.metrics.partition import PARTS
from dejavu.metrics.population import n_most_confident
from dejavu.metrics.schema import SUMMARY_ROWS
from dejavu.models.checkpoint import format_label
from dejavu.report.figures import save_png, training_curves
from dejavu.report.format import (
    auc, integer, number_or_nan, p_value, pct, points, signed3, value_range,
)
from dejavu.report.leakage import leakage_data
from dejavu.report.templating import data_uri, render
from dejavu.runs import Run, read_json

# Sanity gates ------------------------------------------------------------------------------------
def sanity_data(run: Run, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the sanity checks passed (None: a run folder from before they existed) and every check."""
    outcome = metrics.get("sanity")
    path = run.root / "sanity.json"
    sanity = artifacts.load_sanity(run) if outcome is not None and path.is_file() else {}
    checks = sanity.get("checks", [])
    return {
        "passed": None if outcome is None else bool(outcome["passed"]),
        "failures": list(outcome["failures"]) if outcome else [],
        "checks": [{"subject": c["subject"], "name": c["name"], "passed": c["passed"], "detail": c["detail"]}
                   for c in checks],
        # What was checked, by name, once each in the order checked; and what could not be.
        "checked": ", ".join(dict.fromkeys(c["name"] for c in checks)),
        "skipped": list(sanity.get("skipped", [])),
    }


# Numbers -----------------------------------------------------------------------------------------
# Top-5 accuracy says nothing with this few classes: the top 5 then hold every voted class.
TOP5_KEYS = ("target_top5_acc", "reference_top5_acc")
TOP5_MAX_UNINFORMATIVE = 5
# The rows that rest on the p % most confident crops of each direction, by the suffix of their key.
TOP_FRACTIONS = {"_top20": 0.20, "_top05": 0.05}


def top5_note(n_classes: int | None) -> str:
    """Why top-5 accuracy is uninformative with at most 5 classes; empty otherwise (or when unknown)."""
    if n_classes is None or n_classes > TOP5_MAX_UNINFORMATIVE:
        return ""
    return (f"Top-5 accuracy is uninformative here: with {n_classes} classes (≤ {TOP5_MAX_UNINFORMATIVE}) the 5 "
            f"most voted classes are every class that got a vote, so a crop counts as right whenever a single one "
            f"of its k neighbours carries the true label.")


def summary_rows(level: float = 0.95, n_classes: int | None = None) -> list[dict[str, str]]:
    """:data:`~dejavu.metrics.schema.SUMMARY_ROWS` as the numbers tables show them (the interval's
    label names its level, ``metrics.ci_level``; top-5 rows are marked uninformative when
    :func:`top5_note` says so)."""
    uninformative = bool(top5_note(n_classes))
    rows = []
    for row in SUMMARY_ROWS:
        label = row.label
        if row.format == "interval" and row.label.startswith("gap "):
            label = f"gap {100 * level:.0f} % bootstrap interval"
        if uninformative and row.key in TOP5_KEYS:
            label += f" (uninformative with {n_classes} classes, see below)"
        rows.append({"label": label, "key": row.key, "format": row.format})
    return rows


def _direction_summaries(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-direction summaries a summary rests on: a pooled one's directions, or itself."""
    directions = summary.get("directions")
    return list(directions.values()) if directions else [summary]


def _count(value: float) -> str:
    # Expected counts are fractional only where votes tie; whole ones are written as integers.
    return str(round(value)) if abs(value - round(value)) < 1e-6 else f"{value:.1f}"


def subset_sizes(summary: Mapping[str, Any]) -> dict[str, str]:
    """The crops behind each subset figure of a summary, by key: ``n = …`` for the rows on the p % most
    confident crops (each direction's own cut, summed when pooled), ``… of N`` for the partition's shares
    (the expected number of crops in the part, summed over directions, of all attacked crops)."""
    parts = _direction_summaries(summary)
    sizes = [int(d["n_attacked"]) for d in parts]
    out: dict[str, str] = {}
    for row in SUMMARY_ROWS:
        fraction = next((f for suffix, f in TOP_FRACTIONS.items() if row.key.endswith(suffix)), None)
        if fraction is not None:
            out[row.key] = f"n = {sum(n_most_confident(n, fraction) for n in sizes)}"
    expected = {part: sum(share * n for share, n in zip((number_or_nan(d.get(part)) for d in parts), sizes)
                          if n and not math.isnan(share)) for part in PARTS}
    for part, tenths in _tenths_adding_up(expected).items():
        out[part] = f"{_count(tenths / 10)} of {sum(sizes)}"
    return out


def _tenths_adding_up(expected: Mapping[str, float]) -> dict[str, int]:
    """Expected counts in tenths, rounded so that they add up to the rounded total (largest remainders
    get the tenths left): the four parts of a partition then sum to the crops attacked."""
    scaled = {key: 10 * value for key, value in expected.items()}
    floors = {key: math.floor(value + 1e-9) for key, value in scaled.items()}
    left = round(sum(scaled.values())) - sum(floors.values())
    by_remainder = sorted(scaled, key=lambda key: floors[key] - scaled[key])
    return {key: floors[key] + (1 if key in by_remainder[:left] else 0) for key in scaled}


def numbers_columns(named: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Columns of a numbers table: its name, the summary, and :func:`subset_sizes`."""
    return [{"name": name, "summary": summary, "n": subset_sizes(summary)} for name, summary in named]


SUBSET_NOTE = ("In brackets: the crops a figure rests on (n = the most confident crops behind a top-p % accuracy, "
               "each model ranking by its own confidence; for a partition share, the expected number of crops in "
               "the part of all attacked crops, fractional where a vote ties: a tied crop counts in each part it "
               "may fall in, by its chance of falling there, so the four parts add up). Pooled: both directions' crops together; the pooled share is "
               "the mean of the two directions' shares, so it can differ slightly from the ratio of the counts.")


def numbers_data(metrics: Mapping[str, Any], level: float, n_classes: int | None = None) -> dict[str, Any]:
    one_model = bool(metrics.get("one_model"))
    # The one-model test has one direction (A against the classifier): nothing is pooled, nothing to split.
    directions = [] if one_model else [(f"direction {name}", detail) for name, detail in metrics["directions"].items()]
    name = "direction A: target vs classifier" if one_model else "pooled attack"
    return {"rows": summary_rows(level, n_classes), "pooled": numbers_columns([(name, metrics)]),
            "directions": numbers_columns(directions), "subset_note": SUBSET_NOTE, "top5_note": top5_note(n_classes),
            "one_model": one_model}


def control_data(metrics: Mapping[str, Any], level: float, n_classes: int | None = None) -> dict[str, Any]:
    control = metrics["control"]
    if not control["conclusive"]:
        state = "inconclusive"
    else:
        state = "zero" if control["indistinguishable_from_zero"] else "nonzero"
    one_model = bool(metrics.get("one_model"))
    columns = [("control: T", control)] if one_model else [("control pooled", control)] + [
        (f"{name} ({'T1 plays A: target A' if name == 'T1' else 'T2 plays B: target B'})", detail)
        for name, detail in control["directions"].items()
    ]
    return {"state": state, "one_model": one_model, "n_attacked": control["n_attacked"], "gap": control["gap"],
            "p": control["mcnemar_p"], "rows": summary_rows(level, n_classes), "columns": numbers_columns(columns),
            "top5_note": top5_note(n_classes)}


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
            "one_model": bool(metrics.get("one_model")),
            "n_members": roc["n_members"], "n_nonmembers": roc["n_nonmembers"],
            "min_fpr": "n/a" if math.isnan(min_fpr) else f"{min_fpr:.3g}", "figure": figure}


CANARY_HEADER = ["", "crops", "target acc", "reference acc", "gap (points)", "gap over T's [interval], p",
                 "memorized", "mean déjà vu score", "AUC vs T", "TPR at 1 % FPR vs T"]
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
            points(group.get("gap")), _excess_cell(group.get("excess_over_T")),
            pct(group.get("memorized")), signed3(group.get("mean_dejavu_score")),
            f"{auc(versus.get('auc'))} ({value_range(versus.get('auc_ci'), auc)})" if versus else "—",
            pct(versus.get("tpr_at_fpr_0.01")) if versus else "—",
        ])
    return {"ids": canaries.get("ids"), "repeats": canaries.get("repeats"), "header": CANARY_HEADER, "rows": rows,
            "one_model": bool(metrics.get("one_model"))}


def _excess_cell(excess: Mapping[str, Any] | None) -> str:
    if not excess:
        return "—"
    return (f"{points(excess['value'])} [{points(excess['ci95'][0])}, {points(excess['ci95'][1])}], "
            f"p = {p_value(excess['p_value'])}")


def canary_section(metrics: Mapping[str, Any]) -> str:
    """The canaries section as HTML; empty when the run planted none."""
    data = canaries_data(metrics)
    return render("section_canaries.html", s=data) if data else ""


def per_class_data(metrics: Mapping[str, Any]) -> dict[str, Any]:
    rows = [[e["class"], e["n_attacked"], pct(e["target_acc"]), pct(e["reference_acc"]),
             points(number_or_nan(e["target_acc"]) - number_or_nan(e["reference_acc"])),
             pct(e.get("memorized")), pct(e.get("correlated")), pct(e.get("misrepresented")),
             pct(e.get("unassociated"))] for e in metrics.get("per_class") or []]
    header = ["class", "n (attacked crops)", "target acc", "reference acc", "gap (points)", "memorized", "correlated",
              "misrepresented", "unassociated"]
    return {"header": header, "rows": rows}


# Split -------------------------------------------------------------------------------------------
ROLES_OF_SETS = {"A": "target's training set, attacked", "B": "reference's training set, attacked",
                 "shared": "in both training sets, never attacked", "X": "public set (neighbours)",
                 "T": "held out (control)"}
# In the one-model test B trains the correlation classifier (with X) and is not attacked.
ONE_MODEL_ROLES = {"B": "trains the correlation classifier (with X's crops), not attacked",
                   "X": "public set (neighbours; with B, the classifier's training crops)",
                   "shared": "in the target's training set, never attacked",
                   "T": "held out (control: neither the target nor the classifier trained on it)"}


def split_data(run: Run, metrics: Mapping[str, Any], table: ImageTable) -> dict[str, Any]:
    # Checked against the catalog, with its sizes and checks recomputed: the page shows what holds now.
    split = artifacts.read_split(run, table).payload
    sizes = metrics.get("split_sizes") or split.get("sizes", {})
    skipped = metrics.get("crops_skipped", {})
    checks = split.get("checks", {})
    counts = checks.get("per_class_counts", {})
    roles = {**ROLES_OF_SETS, **(ONE_MODEL_ROLES if metrics.get("one_model") else {})}
    rows = [[name, roles.get(name, ""), sizes.get(name, ""),
             _count_range(counts.get(name)), skipped.get(name, "-")] for name in sizes]
    how = ("the paper's partition (boxed images halved between A and B, unboxed images shared, X and T from "
           "the rest)" if split.get("scheme", "balanced") == "paper" else "balanced per class")
    check_rows = [[f"overlap {pair}", count, "ok" if count == 0 else "FAIL"]
                  for pair, count in checks.get("pairwise_disjoint", {}).items()]
    check_rows.append(["all ids in dataset", checks.get("all_ids_in_dataset"),
                       "ok" if checks.get("all_ids_in_dataset") else "FAIL"])
    return {"how": how, "per_class": json.dumps(split.get("per_class", {})), "rows": rows,
            "checks_ok": bool(checks.get("ok")), "check_rows": check_rows,
            "leakage": leakage_data(split.get("leakage"), table, checks.get("pairwise_disjoint")),
            "reasons": _skip_reasons(run, table)}


def _count_range(counts: Sequence[int] | None) -> str:
    if not counts:
        return ""
    present = [c for c in counts if c] or [0]
    return f"{min(present)}" if min(present) == max(present) else f"{min(present)}–{max(present)}"


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
    """The recipe both models share, and each model's loss curve and throughput (from ``history.json``); in
    an audit, the checkpoints loaded (``source.json``: path, size, SHA-256, where the weights were)."""
    t = run.config.train
    if run.config.model.audited:
        return {"sources": [_source_row(model, artifacts.load_source(run, model)) for model in ("A", "B")
                            if (run.model_dir(model) / "source.json").is_file()]}
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
    return {"recipe": recipe, "rows": rows, "loss_uri": loss_uri, "sources": []}


def _source_row(model: str, source: dict[str, Any]) -> list[Any]:
    dropped = source.get("dropped") or []
    shown = (f"{len(dropped)} ({', '.join(dropped[:3])}{', ...' if len(dropped) > 3 else ''})" if dropped else "0")
    where = " · ".join(part for part in (source.get("nested") and f"'{source['nested']}'",
                                          source.get("prefix") and f"prefix '{source['prefix']}'") if part)
    preprocessing = (f"{source.get('image_size')} px, mean {source.get('mean')}, std {source.get('std')}"
                     f"{', centre ' + str(source.get('crop_fraction')) if source.get('resize') == 'center_crop' else ''}")
    return [f"{model} ({source.get('role', '')})", f"{source.get('arch', '')} · projector {source.get('projector', '')}",
            source.get("path", ""), source.get("bytes", ""), _digest(str(source.get("sha256", ""))),
            f"{format_label(str(source.get('format', '')))}{' · ' + where if where else ''}",
            f"{shown} · {len(source.get('missing') or [])}", preprocessing]


def _digest(sha256: str) -> dict[str, str] | str:
    """A SHA-256 as its first 12 hex digits, the full value on hover (and in ``source.json``)."""
    return {"text": f"{sha256[:12]}…", "title": sha256} if len(sha256) > 16 else sha256


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

