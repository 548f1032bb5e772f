"""``metrics.json["reconstruction"]``'s typed schema (a part of :mod:`dejavu.metrics.schema`, which reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(kw_only=True)
class ReconstructionTest:
    """Target's reconstructions against the reference's (:func:`dejavu.reconstruct.scoring.reconstruction_summary`):
    accuracies as shares of samples showing the true class, pooled over directions; NaN with no crop."""

    n: int
    target_acc: float
    reference_acc: float
    gap: float
    mcnemar_p: float
    gap_ci95: list[float]
    target_acc_top20: float
    reference_acc_top20: float
    gap_top20: float


@dataclass(kw_only=True)
class ScoredReconstruction(ReconstructionTest):
    control: ReconstructionTest


@dataclass(kw_only=True)
class Judge:
    """The classifier of X's full images that labels reconstructions: its quality on T's full images."""

    T: dict[str, float]  # noqa: N815 (the set's name, as everywhere in the files)
    epochs: int
    temperature: float


@dataclass(kw_only=True)
class Reconstruction(ScoredReconstruction):
    """The judge's test at the top level; ``colour`` (built-in scenes only) the object-colour score's."""

    colour: ScoredReconstruction | None = field(default=None, metadata={"optional": True, "omit_none": True})
    judge: Judge
    # Per model, the share of X images whose reconstruction from their own embeddings the judge labels right.
    fidelity: dict[str, float]
    reconstructed: dict[str, int]
