"""``metrics.json["vlm"]``'s typed schema (the vlm stage writes ``vlm/summary.json`` in this shape; the metrics
stage copies it; :mod:`dejavu.metrics.schema` reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(kw_only=True)
class VlmTop:
    """The gaps among the most confident records (by the target's confidence)."""

    n: int
    ppg: float
    prg: float


@dataclass(kw_only=True)
class VlmGaps:
    """PPG and PRG (shares of records: target better minus target worse) with the sign test's p, the wins and
    losses it counts and a bootstrap interval; mean precision and recall per model; the recall-gap AUC."""

    n: int
    ppg: float
    ppg_p: float
    ppg_ci: list[float]
    ppg_wins: int
    ppg_losses: int
    prg: float
    prg_p: float
    prg_ci: list[float]
    prg_wins: int
    prg_losses: int
    target_precision: float
    reference_precision: float
    target_recall: float
    reference_recall: float
    recall_gap_auc: float
    top: dict[str, VlmTop]


@dataclass(kw_only=True)
class VlmExcess:
    """With a text-only reference: the training records' PPG / PRG minus the control's, the Mann-Whitney p of the
    two groups' sign scores and a bootstrap interval."""

    ppg: float
    ppg_p: float
    ppg_ci: list[float]
    prg: float
    prg_p: float
    prg_ci: list[float]


@dataclass(kw_only=True)
class Vlm(VlmGaps):
    """The pooled test (A's records with A's model as target, B's with B's) at the top level, each direction,
    the negative control on T, and the models' caption -> image retrieval on T (what the verdict needs)."""

    k: int
    directions: dict[str, VlmGaps]
    control: VlmGaps
    # Per model: the share of T's captions whose own image is among their k nearest of T's images, and chance.
    retrieval: dict[str, float]
    # The retrieval gate's failures in words (:func:`dejavu.metrics.vlm.retrieval_failures`): none, or no verdict.
    failures: list[str]
    # "model": the other CLIP (the two-model test); "text": captions retrieve X by X's captions alone (TF-IDF).
    reference: str = field(default="model", metadata={"optional": True, "omit_none": True})
    excess: VlmExcess | None = field(default=None, metadata={"optional": True, "omit_none": True})
