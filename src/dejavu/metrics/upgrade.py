"""Compatibility: ``metrics.json`` and ``evaluation.json`` of any older version in the current shape.

The only code that knows older versions (:mod:`dejavu.metrics.schema` lists them); every reader goes through
:func:`dejavu.metrics.schema.read_metrics` / :func:`~dejavu.metrics.schema.read_evaluation`, which call these."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from dejavu.errors import RunFolderError
from dejavu.metrics.outcomes import control_conclusive, decide_outcomes
from dejavu.metrics.vlm import retrieval_failures

SCHEMA_VERSION = 3
EVALUATION_SCHEMA_VERSION = 2


def upgrade_metrics(payload: dict[str, Any]) -> dict[str, Any]:
    """Any version's ``metrics.json`` in the current shape (a new dict; the current version unchanged).

    Version 1 (no ``schema_version``): before the ROC existed there is no ``roc`` (read as None); before
    the control's size check ``control.conclusive`` is missing (derived as the metrics stage does now).
    Version 2: the verdict sentences give way to ``outcomes``, decided from the file's own numbers by
    :func:`dejavu.metrics.outcomes.decide_outcomes` (at the default ``metrics.clear_margin``); the
    vision-language retrieval gate is recomputed from ``vlm.retrieval``."""
    version = payload.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise RunFolderError(f"metrics.json: schema_version {version!r} is not one this dejavu reads "
                             f"(1 to {SCHEMA_VERSION}); re-run the metrics stage")
    if version == SCHEMA_VERSION:
        return dict(payload)
    upgraded = _from_version_1(payload) if version == 1 else dict(payload)
    return _from_version_2(upgraded)


def _from_version_1(payload: dict[str, Any]) -> dict[str, Any]:
    upgraded = {"schema_version": 2, **payload}
    control = upgraded.get("control")
    if isinstance(control, dict) and "conclusive" not in control and isinstance(control.get("directions"), dict):
        halves = [d.get("n_attacked", 0) for d in control["directions"].values()]
        rest = {k: v for k, v in control.items() if k != "indistinguishable_from_zero"}
        conclusive = control_conclusive(halves)
        # "Indistinguishable from zero" needs a conclusive control, as the metrics stage decides today.
        upgraded["control"] = {**rest, "conclusive": conclusive,
                               "indistinguishable_from_zero": bool(control.get("indistinguishable_from_zero"))
                               and conclusive}
    if "roc" not in upgraded:
        tail = {k: upgraded.pop(k) for k in list(upgraded) if k in ("per_class", "canaries", "split_sizes",
                                                                       "crops_skipped")}
        upgraded.update(roc=None, **tail)
    return upgraded


def _from_version_2(payload: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in payload.items() if k not in ("schema_version", "verdict")}
    vlm = rest.get("vlm")
    if isinstance(vlm, dict):
        vlm = {k: v for k, v in vlm.items() if k != "verdict"}
        try:
            vlm["failures"] = retrieval_failures(vlm["retrieval"], int(vlm["control"]["n"]), int(vlm["k"]),
                                                 float(payload["alpha"]), "check the models")
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFolderError(f"metrics.json: version 2 file without the key {exc} of 'vlm' that the retrieval "
                                 "gate needs; re-run the metrics stage") from None
        rest["vlm"] = vlm
    try:
        outcomes = {name: asdict(o) for name, o in decide_outcomes(rest).items()}
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RunFolderError(f"metrics.json: cannot decide the outcomes of this version-2 file ({type(exc).__name__} "
                             f"{exc}): a key is missing or of the wrong type; re-run the metrics stage") from None
    return {"schema_version": SCHEMA_VERSION, "outcomes": outcomes, **rest}


def upgrade_evaluation(payload: dict[str, Any]) -> dict[str, Any]:
    """Any version's ``evaluation.json`` in the current shape (version 1: no ``schema_version``)."""
    version = payload.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= EVALUATION_SCHEMA_VERSION:
        raise RunFolderError(f"evaluation.json: schema_version {version!r} is not one this dejavu reads "
                             f"(1 to {EVALUATION_SCHEMA_VERSION}); re-run the evaluate stage")
    return dict(payload) if version == EVALUATION_SCHEMA_VERSION else {"schema_version": EVALUATION_SCHEMA_VERSION,
                                                                       **payload}
