"""Sanity gates: whether two trained models and their data can support a verdict at all.

A déjà vu verdict compares two models; it means something only if both learned a usable representation
of data that could show the effect. Each check here is a pure function of what the run folder holds
(loss history, X's embeddings, accuracy on T, class counts) and returns a :class:`Check`; a run whose
checks do not all pass gets no verdict, only the reasons (see ``docs/reliability.md``).

The thresholds are deliberately loose: they catch broken models (a loss that blew up, embeddings that
collapsed to a point or a line, features no better than guessing), not merely weak ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy.stats import binomtest

from dejavu.metrics.pvalue import format_p
from dejavu.models.checkpoint import format_label

# Any epoch's loss above this multiple of the first epoch's means the optimisation blew up (healthy runs
# of every method here stay within 1.2x; a diverged one reaches 1e5x and more).
BLOW_UP_FACTOR = 10.0
# Embeddings vary around their mean by less than this fraction of their norm: collapsed to a point.
MIN_RELATIVE_SPREAD = 0.05
# Fewer effective dimensions than this (entropy of the variance spectrum): collapsed to a line.
MIN_EFFECTIVE_RANK = 1.5
# Accuracy on T must beat always answering T's most frequent class, one-sided at this level.
CHANCE_LEVEL = 0.05
# Methods whose loss is not comparable across epochs, so it need not fall: DINO sharpens its teacher
# (temperature warm-up) and moves its centre, which raises the cross-entropy early in healthy runs.
LOSS_MAY_RISE = frozenset({"dino"})


@dataclass(frozen=True)
class Check:
    """One gate: ``name`` (what it tests), ``subject`` (model A/B or "data"), ``passed``, ``detail``."""

    name: str
    subject: str
    passed: bool
    detail: str


def loss_checks(history: Sequence[float], subject: str, method: str) -> list[Check]:
    """The training loss: finite, never blown up, and (where comparable across epochs) lower at the end."""
    losses = np.asarray(history, dtype=np.float64)
    if losses.size == 0:
        return [Check("loss recorded", subject, False, "the training recorded no loss (history.json is empty)")]
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        return [Check("loss finite", subject, False,
                      f"loss {losses[bad[0]]} at epoch {bad[0] + 1}: the training diverged")]
    checks = [Check("loss finite", subject, True, f"{losses.size} epochs, all finite")]
    first, worst = abs(losses[0]), int(np.argmax(np.abs(losses)))
    blown = abs(losses[worst]) > BLOW_UP_FACTOR * max(first, 1e-12)
    checks.append(Check(
        "loss did not blow up", subject, not blown,
        f"largest epoch loss {losses[worst]:.3g} (epoch {worst + 1}) vs {losses[0]:.3g} at epoch 1"
        + (f": more than {BLOW_UP_FACTOR:g}x, the training diverged (lower train.lr or set train.grad_clip)"
           if blown else f" (at most {BLOW_UP_FACTOR:g}x allowed)"),
    ))
    if losses.size >= 2 and method not in LOSS_MAY_RISE and not blown:
        fell = losses[-1] < losses[0]
        checks.append(Check(
            "loss fell", subject, fell,
            f"epoch {losses.size}: {losses[-1]:.4g}, epoch 1: {losses[0]:.4g}"
            + ("" if fell else ": the model did not learn (raise train.epochs or train.lr)"),
        ))
    return checks


def weights_check(source: dict[str, Any], subject: str) -> Check:
    """An audited checkpoint gave every weight of the network (``source.json``'s ``missing``, left at their
    random initial values by ``model.strict=false``): a partly random network is not the model trained.

    Random features still beat chance, so the other gates may not see it; this one does."""
    missing = [key for key in source.get("missing") or [] if not key.endswith("num_batches_tracked")]
    if missing:
        shown = ", ".join(f"'{key}'" for key in missing[:3])
        return Check("weights complete", subject, False,
                     f"{len(missing)} weights of the network were not in '{source.get('path')}' and kept random "
                     f"values (model.strict=false), e.g. {shown}: not the model that was trained")
    return Check("weights complete", subject, True,
                 f"an outside checkpoint ({format_label(str(source.get('format')))}, {source.get('loaded', 'all')} "
                 "tensors loaded)")


def classifier_checks(summary: dict[str, Any]) -> list[Check]:
    """The one-model test's correlation classifier (``classifier.json``): its training loss finite, never
    blown up, and lower at the end. Its accuracy on T is reported, not gated: crops whose background says
    nothing of the object leave an honest classifier at chance, and the test compares A with T through the
    same classifier, so its quality cancels."""
    history = (summary.get("history") or {}).get("train_loss") or []
    return loss_checks(history, "correlation classifier", "supervised")


def spread(embeddings: np.ndarray) -> tuple[float, float]:
    """(relative spread, effective rank) of a set of embeddings.

    Relative spread: RMS distance to the mean over RMS norm (0: every row the same point). Effective
    rank: exp of the entropy of the centred variance spectrum (1: all variance along one direction)."""
    data = np.asarray(embeddings, dtype=np.float64)
    centred = data - data.mean(axis=0)
    norm = float(np.sqrt(np.mean(np.sum(data ** 2, axis=1))))
    relative = float(np.sqrt(np.mean(np.sum(centred ** 2, axis=1)))) / norm if norm > 0 else 0.0
    variances = np.linalg.svd(centred, compute_uv=False) ** 2
    total = variances.sum()
    if total <= 0:
        return relative, 0.0
    shares = variances[variances > 0] / total
    return relative, float(np.exp(-np.sum(shares * np.log(shares))))


def embedding_checks(embeddings: np.ndarray, subject: str, what: str) -> list[Check]:
    """``what`` (e.g. "X's embeddings at projector") finite and not collapsed."""
    data = np.asarray(embeddings, dtype=np.float64)
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        return [Check("embeddings finite", subject, False,
                      f"{int((~finite).sum())} of {len(data)} rows of {what} are not finite")]
    if len(data) < 2:
        return [Check("embeddings not collapsed", subject, False, f"{what}: fewer than 2 rows")]
    relative, rank = spread(data)
    collapsed = relative < MIN_RELATIVE_SPREAD or rank < MIN_EFFECTIVE_RANK
    shape = "to a point" if relative < MIN_RELATIVE_SPREAD else "to a line"
    return [
        Check("embeddings finite", subject, True, f"{what}: {len(data)} rows, all finite"),
        Check("embeddings not collapsed", subject, not collapsed,
              f"{what}: relative spread {relative:.3f} (at least {MIN_RELATIVE_SPREAD} needed), effective rank "
              f"{rank:.2f} (at least {MIN_EFFECTIVE_RANK} needed)" + (f": collapsed {shape}" if collapsed else "")),
    ]


def accuracy_check(accuracy: float, labels: np.ndarray, subject: str, what: str) -> Check:
    """``accuracy`` on the held-out ``labels`` beats always answering their most frequent class."""
    labels = np.asarray(labels)
    n = len(labels)
    if n == 0:
        return Check("accuracy above chance", subject, False, f"{what}: T is empty")
    chance = float(np.bincount(labels).max() / n)
    correct = int(round(accuracy * n))
    p = float(binomtest(correct, n, chance, alternative="greater").pvalue) if chance < 1 else 1.0
    passed = p < CHANCE_LEVEL
    return Check(
        "accuracy above chance", subject, passed,
        f"{what}: {100 * accuracy:.1f} % of {n} held-out images vs {100 * chance:.1f} % by always answering the "
        f"most frequent class (one-sided binomial p = {format_p(p)}" + (")" if passed else
                                                                   f", not below {CHANCE_LEVEL}): no usable features"),
    )


def class_checks(labels_by_set: dict[str, np.ndarray]) -> list[Check]:
    """Every set the attack needs holds at least two classes: with one, any vote is right by construction."""
    checks = []
    for name, labels in labels_by_set.items():
        count = len(np.unique(labels))
        checks.append(Check(
            f"two or more classes in {name}", "data", count >= 2,
            f"set {name}: {len(labels)} images of {count} class{'es' if count != 1 else ''}"
            + ("" if count >= 2 else ": déjà vu cannot be told from always answering that class"),
        ))
    return checks


# The checks a model trained elsewhere cannot have: it comes without its training history.
NO_HISTORY = "loss checks skipped: no training history (an outside checkpoint)"


def summary(checks: Sequence[Check], skipped: Sequence[str] = ()) -> dict[str, Any]:
    """``sanity.json``'s payload: ``passed``, the ``failures`` in words, every check, and the checks that
    could not be made (``skipped``, sentences such as "model A: loss checks skipped: ...")."""
    failed = [c for c in checks if not c.passed]
    return {
        "passed": not failed,
        "failures": [f"{'model ' + c.subject if c.subject in ('A', 'B') else c.subject}: {c.detail}" for c in failed],
        "checks": [asdict(c) for c in checks],
        "skipped": list(skipped),
    }
