"""Typed schema of a run folder's ``metrics.json`` and ``evaluation.json``, and their one reader.

Every key of the two files is a field of a dataclass below, in the file's key order; nested objects are
nested dataclasses. The writers build the dataclasses and serialise them with :func:`to_json`; every
reader goes through :func:`read_metrics` / :func:`read_evaluation`, which upgrade a file written by an
older version (:func:`upgrade_metrics`, :func:`upgrade_evaluation`: the only compatibility code) and
refuse an unknown or missing key with a :class:`~dejavu.errors.RunFolderError` naming the file and key.

Schema versions: files written before this schema carry no ``schema_version`` and are version 1 (they
may lack what was added over time: ``roc``, ``control.conclusive``; ``canaries`` and ``per_class`` are
optional in every version). Version 2 is version 1's latest shape plus ``schema_version`` as first key.
Version 3 replaces the verdict sentences (``verdict``, ``vlm.verdict``) by ``outcomes``: every test's decision as
data (:mod:`dejavu.metrics.outcomes`), and records the vision-language retrieval gate's ``vlm.failures``.

Field metadata (:func:`metric`): ``pooled`` marks the per-direction numbers :func:`~dejavu.metrics.tables.pooled_summary`
averages (:data:`POOLED_MEANS`); ``sweep`` / ``spread`` its place in sweep.csv / summary.csv.

``SUMMARY_ROWS``, the report's numbers tables: one row per metric of a summary (pooled attack, a direction, the
control), in display order; every key a field of :class:`DirectionSummary` and :class:`PooledSummary` (checked)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from dejavu.errors import RunFolderError
from dejavu.metrics.outcomes import Outcome
from dejavu.metrics.reconstruction_schema import Reconstruction
from dejavu.metrics.upgrade import (  # noqa: F401 (SCHEMA_VERSION: the schema's own version, read from here)
    EVALUATION_SCHEMA_VERSION, SCHEMA_VERSION, upgrade_evaluation, upgrade_metrics,
)
from dejavu.metrics.vlm_schema import Vlm
from dejavu.runs import read_json


Format = Literal["integer", "pct", "points", "interval", "p_value"]


@dataclass(frozen=True)
class SummaryRow:
    label: str
    key: str
    format: Format


SUMMARY_ROWS: tuple[SummaryRow, ...] = (
    SummaryRow("attacked examples", "n_attacked", "integer"),
    SummaryRow("target accuracy (top-1)", "target_acc", "pct"),
    SummaryRow("reference accuracy (top-1)", "reference_acc", "pct"),
    SummaryRow("gap, target - reference (points)", "gap", "points"),
    SummaryRow("gap 95 % bootstrap interval", "gap_ci95", "interval"),
    SummaryRow("target accuracy, 20 % most confident", "target_acc_top20", "pct"),
    SummaryRow("reference accuracy, 20 % most confident", "reference_acc_top20", "pct"),
    SummaryRow("déjà vu score, top 20 % (points)", "dejavu_score_top20", "points"),
    SummaryRow("target accuracy, 5 % most confident", "target_acc_top05", "pct"),
    SummaryRow("reference accuracy, 5 % most confident", "reference_acc_top05", "pct"),
    SummaryRow("déjà vu score, top 5 % (points)", "dejavu_score_top05", "points"),
    SummaryRow("target top-5 prediction accuracy", "target_top5_acc", "pct"),
    SummaryRow("reference top-5 prediction accuracy", "reference_top5_acc", "pct"),
    SummaryRow("memorized (target right, reference wrong)", "memorized", "pct"),
    SummaryRow("correlated (both right)", "correlated", "pct"),
    SummaryRow("misrepresented (target wrong, reference right)", "misrepresented", "pct"),
    SummaryRow("unassociated (both wrong)", "unassociated", "pct"),
    SummaryRow("McNemar b (target right, reference wrong)", "mcnemar_b", "integer"),
    SummaryRow("McNemar c (target wrong, reference right)", "mcnemar_c", "integer"),
    SummaryRow("exact McNemar p", "mcnemar_p", "p_value"),
)


def metric(*, key: str | None = None, optional: bool = False, omit_none: bool = False, pooled: bool = False,
           sweep: int | None = None, spread: int | None = None, default: Any = dataclasses.MISSING) -> Any:
    """A field with schema metadata: ``key`` its JSON key (when not a Python name); ``optional`` the key may be
    absent (absent reads as None); ``omit_none`` (implied by ``optional``) None is not written; ``pooled`` a
    mean over directions; ``sweep`` / ``spread`` its column position in ``sweep.csv`` / ``summary.csv``."""
    meta = {"key": key, "optional": optional, "omit_none": omit_none or optional, "pooled": pooled,
            "sweep": sweep, "spread": spread}
    return field(default=default, metadata=meta)


def json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


# metrics.json ---------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class Curve:
    """Accuracy among the most confident fraction of the attacked crops, for 20 fractions."""

    fractions: list[float]
    target: list[float]
    reference: list[float]


@dataclass(kw_only=True)
class DirectionSummary:
    """One direction (A, B; T1, T2 for the control): accuracies in [0, 1], gap and scores as differences."""

    n_attacked: int
    target_acc: float
    reference_acc: float
    target_top5_acc: float
    reference_top5_acc: float
    target_acc_top20: float
    reference_acc_top20: float
    target_acc_top05: float
    reference_acc_top05: float
    memorized: float
    correlated: float
    misrepresented: float
    unassociated: float
    curve: Curve
    gap: float
    dejavu_score_top20: float
    dejavu_score_top05: float
    mcnemar_p: float
    mcnemar_b: int
    mcnemar_c: int
    gap_ci95: list[float]


@dataclass(kw_only=True)
class PooledSummary:
    """Both directions pooled: ``pooled`` fields are the mean over :attr:`directions`; McNemar on all pairs."""

    n_attacked: int
    target_acc: float = metric(pooled=True, sweep=1, spread=2)
    reference_acc: float = metric(pooled=True, sweep=2, spread=3)
    target_top5_acc: float = metric(pooled=True)
    reference_top5_acc: float = metric(pooled=True)
    target_acc_top20: float = metric(pooled=True, sweep=4, spread=4)
    reference_acc_top20: float = metric(pooled=True, sweep=5, spread=5)
    target_acc_top05: float = metric(pooled=True)
    reference_acc_top05: float = metric(pooled=True)
    gap: float = metric(pooled=True, sweep=3, spread=1)
    dejavu_score_top20: float = metric(pooled=True, sweep=6)
    dejavu_score_top05: float = metric(pooled=True)
    memorized: float = metric(pooled=True, sweep=7, spread=6)
    correlated: float = metric(pooled=True, sweep=8, spread=7)
    misrepresented: float = metric(pooled=True, sweep=9, spread=8)
    unassociated: float = metric(pooled=True, sweep=10, spread=9)
    mcnemar_p: float = metric(sweep=11)
    mcnemar_b: int
    mcnemar_c: int
    gap_ci95: list[float]
    ci_level: float
    curve: Curve
    directions: dict[str, DirectionSummary]


@dataclass(kw_only=True)
class ControlSummary(PooledSummary):
    """The control (T in halves T1, T2): conclusive at :data:`MIN_CONTROL_HALF` crops a half; zero-like if also p > 0.05."""

    conclusive: bool
    indistinguishable_from_zero: bool


@dataclass(kw_only=True)
class RocCurve:
    fpr: list[float]
    tpr: list[float]


@dataclass(kw_only=True)
class Roc:
    """:func:`dejavu.metrics.roc.roc_summary` at FPRs 0.01 and 0.001 (the canaries' at 0.01 only)."""

    auc: float
    auc_ci: list[float]
    tpr_at_fpr_0_01: float = metric(key="tpr_at_fpr_0.01")
    tpr_at_fpr_0_01_ci: list[float] = metric(key="tpr_at_fpr_0.01_ci")
    tpr_at_fpr_0_001: float | None = metric(key="tpr_at_fpr_0.001", optional=True, default=None)
    tpr_at_fpr_0_001_ci: list[float] | None = metric(key="tpr_at_fpr_0.001_ci", optional=True, default=None)
    ci_level: float
    bootstrap: int
    n_members: int
    n_nonmembers: int
    min_measurable_fpr: float
    curve: RocCurve


@dataclass(kw_only=True)
class ClassRow:
    """Pooled accuracies and partition of one foreground class."""

    label: int
    class_: str = metric(key="class")
    n_attacked: int
    target_acc: float
    reference_acc: float
    memorized: float
    correlated: float
    misrepresented: float
    unassociated: float


@dataclass(kw_only=True)
class ExcessGap:
    """A's gap minus T's: :func:`dejavu.metrics.stats.excess_test` (bootstrap interval, permutation p)."""

    value: float
    ci95: list[float]
    p_value: float


@dataclass(kw_only=True)
class CanaryGroup:
    n: int
    target_acc: float
    reference_acc: float
    memorized: float
    mean_dejavu_score: float
    gap: float
    # canaries and ordinary: their gap minus T's (T's own: None); absent in files written before it.
    excess_over_T: ExcessGap | None = metric(optional=True, default=None)


@dataclass(kw_only=True)
class CanaryRoc:
    canaries_vs_T: Roc
    ordinary_vs_T: Roc


@dataclass(kw_only=True)
class Canaries:
    """The self-check of ``split.canaries`` (:func:`dejavu.metrics.tables.canary_summary`)."""

    ids: int
    repeats: int
    canaries: CanaryGroup
    ordinary: CanaryGroup
    control: CanaryGroup
    roc: CanaryRoc


@dataclass(kw_only=True)
class Calibration:
    """The correlation classifier on a set of crops (:func:`dejavu.evaluate.correlation.calibration`)."""

    n: int
    accuracy: float
    mean_confidence: float
    ece: float
    nll: float
    brier: float


@dataclass(kw_only=True)
class OneModel:
    """The one-model test (:func:`dejavu.metrics.tables.one_model_summary`), whose verdict rests on the
    excess gaps (all crops; each one's 20 % most confident)."""

    reference: str
    excess_gap: ExcessGap
    excess_gap_top20: ExcessGap
    permutations: int
    calibration_T: Calibration
    calibration_validation: Calibration | None = metric(optional=True, default=None)
    temperature: float
    trained_on: dict[str, int]


@dataclass(kw_only=True)
class Sanity:
    """The sanity stage's outcome (``sanity.json`` holds every check): without ``passed`` there is no verdict."""
    passed: bool
    failures: list[str]


@dataclass(kw_only=True)
class _Head:
    schema_version: int
    # Each test that ran, by name ("vlm", "image" or "one_model", "reconstruction"), the headline first.
    outcomes: dict[str, Outcome]
    alpha: float


@dataclass(kw_only=True)
class _Tail:
    control: ControlSummary
    roc: Roc | None  # None: a version-1 file written before the ROC existed
    per_class: list[ClassRow] | None = metric(optional=True, default=None)
    canaries: Canaries | None = metric(optional=True, default=None)
    one_model: OneModel | None = metric(optional=True, default=None)
    reconstruction: Reconstruction | None = metric(optional=True, default=None)  # the reconstruct stage's test
    vlm: Vlm | None = metric(optional=True, default=None)  # the vlm stage's (CLIP runs)
    # Written by the metrics stage (None while summarise's caller adds them itself; never None in a file).
    split_sizes: dict[str, int] | None = metric(omit_none=True, default=None)
    crops_skipped: dict[str, int] | None = metric(omit_none=True, default=None)
    # Absent in files written before the sanity stage existed (read as None: their models went unchecked).
    sanity: Sanity | None = metric(optional=True, default=None)


@dataclass(kw_only=True)
class MetricsFile(_Tail, PooledSummary, _Head):
    """``metrics.json``: the pooled attack summary at the top level between the verdict and the control
    (the bases' fields in the order _Head, PooledSummary, _Tail: the file's key order)."""


# evaluation.json ------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class TrainTest:
    """Accuracy on the model's own training images and on T (full images); gap = train - test."""

    train: float
    test: float
    gap: float


@dataclass(kw_only=True)
class LayerMetrics:
    knn: TrainTest
    linear_probe: TrainTest


@dataclass(kw_only=True)
class EvaluationFile:
    """``evaluation.json``: ``models[model][layer]`` for models A, B at ``layers`` (backbone, attack layer)."""

    schema_version: int
    k: int
    attack_layer: str
    layers: list[str]
    sizes: dict[str, int]
    models: dict[str, dict[str, LayerMetrics]]
    note: str


# Derived tables -------------------------------------------------------------------------------------
POOLED_MEANS: tuple[str, ...] = tuple(f.name for f in fields(PooledSummary) if f.metadata.get("pooled"))


def _ordered(cls: type, what: str) -> tuple[str, ...]:
    marked = [f for f in fields(cls) if f.metadata.get(what) is not None]
    return tuple(f.name for f in sorted(marked, key=lambda f: f.metadata[what]))


# Per-point numbers of sweep.csv (in column order) and those summary.csv spreads over seeds.
SWEEP_METRICS: tuple[str, ...] = _ordered(PooledSummary, "sweep")
SPREAD_METRICS: tuple[str, ...] = _ordered(PooledSummary, "spread")
# evaluation.json's numbers of one model at one layer: (metric, part) in file order.
CONVENTIONAL_PARTS: tuple[tuple[str, str], ...] = tuple(
    (m.name, p.name) for m in fields(LayerMetrics) for p in fields(TrainTest))


# Serialising and reading ----------------------------------------------------------------------------
def to_json(value: Any) -> Any:
    """A schema object as plain JSON values, keys in field order (``omit_none`` fields left out when None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {json_key(f): to_json(getattr(value, f.name)) for f in fields(value)
                if not (f.metadata.get("omit_none") and getattr(value, f.name) is None)}
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


T = TypeVar("T")
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _wrong(file: str, path: str, expected: str, value: Any) -> RunFolderError:
    text = repr(value)
    found = text if len(text) <= 60 else text[:57] + "..."
    return RunFolderError(f"{file}: key '{path}': expected {expected}, found {found}" if path else
                          f"{file}: expected {expected}, found {found}")


def _parse(annotation: Any, value: Any, file: str, path: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return None if value is None else _parse(options[0], value, file, path)
    if dataclasses.is_dataclass(annotation):
        return from_json(annotation, value, file, path)
    if origin is list:
        if not isinstance(value, list):
            raise _wrong(file, path, "a list", value)
        (item,) = typing.get_args(annotation)
        return [_parse(item, v, file, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(file, path, "an object", value)
        item = typing.get_args(annotation)[1]
        return {k: _parse(item, v, file, f"{path}.{k}") for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong(file, path, _NAMES[float], value)
        return value
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise _wrong(file, path, _NAMES.get(annotation, str(annotation)), value)
    return value


def from_json(cls: type[T], payload: Any, file: str, path: str = "") -> T:
    """``payload`` as a ``cls``, checked: an unknown key, a missing one or a value of another type raises
    :class:`RunFolderError` naming ``file`` and the key's path (e.g. ``.../metrics.json: missing key
    'control.conclusive'``)."""
    if not isinstance(payload, dict):
        raise _wrong(file, path, "an object", payload)
    hints = typing.get_type_hints(cls)
    known = {json_key(f): f for f in fields(cls)}
    prefix = f"{path}." if path else ""
    unknown = [key for key in payload if key not in known]
    if unknown:
        raise RunFolderError(f"{file}: unknown key '{prefix}{unknown[0]}' (this schema version knows: "
                             f"{', '.join(known)})")
    values = {}
    for key, f in known.items():
        if key not in payload and not f.metadata.get("optional"):
            raise RunFolderError(f"{file}: missing key '{prefix}{key}'")
        values[f.name] = _parse(hints[f.name], payload.get(key), file, prefix + key)
    return cls(**values)


def _upgraded(cls: type[T], upgrade: Any, payload: Any, where: str | Path) -> T:
    if not isinstance(payload, dict):
        raise _wrong(str(where), "", "an object", payload)
    return from_json(cls, upgrade(payload), str(where))


def metrics_from_json(payload: Any, where: str | Path = "metrics.json") -> MetricsFile:
    """A ``metrics.json`` payload of any version, upgraded and checked."""
    return _upgraded(MetricsFile, upgrade_metrics, payload, where)


def evaluation_from_json(payload: Any, where: str | Path = "evaluation.json") -> EvaluationFile:
    """An ``evaluation.json`` payload of any version, upgraded and checked."""
    return _upgraded(EvaluationFile, upgrade_evaluation, payload, where)


def read_metrics(path: str | Path) -> MetricsFile:
    """``metrics.json`` (a run folder's file path) read, upgraded from an older version and checked."""
    return metrics_from_json(read_json(path), path)


def read_evaluation(path: str | Path) -> EvaluationFile:  # the same for evaluation.json
    return evaluation_from_json(read_json(path), path)


def evaluation_payload(*, k: int, attack_layer: str, layers: list[str], sizes: dict[str, int],
                       models: dict[str, dict[str, Any]], note: str) -> dict[str, Any]:
    """What the evaluate stage writes as ``evaluation.json``: ``models[model][layer]`` as
    :func:`dejavu.evaluate.conventional.conventional_metrics` returns it; checked against the schema."""
    payload = {"schema_version": EVALUATION_SCHEMA_VERSION, "k": k, "attack_layer": attack_layer,
               "layers": list(layers), "sizes": sizes, "models": models, "note": note}
    return to_json(from_json(EvaluationFile, to_json(payload), "evaluation.json"))


def summary_fields(cls: type) -> set[str]:
    return {json_key(f) for f in fields(cls)}


for _row, _cls in ((row, cls) for row in SUMMARY_ROWS for cls in (DirectionSummary, PooledSummary)):
    if _row.key not in summary_fields(_cls):
        raise AssertionError(f"SUMMARY_ROWS key '{_row.key}' is not a field of {_cls.__name__}")
