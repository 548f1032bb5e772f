"""Disjoint, per-class balanced sets A (target), B (reference), X (public), T (held-out)."""

from __future__ import annotations

from itertools import combinations

import numpy as np

from dejavu.errors import DataError

SET_NAMES = ("A", "B", "X", "T")


def split_ids(ids: np.ndarray, labels: np.ndarray, per_class: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Draw ``per_class[name]`` ids of every class for each set, without replacement.

    Example:
        >>> sets = split_ids(ids, labels, {"A": 20, "B": 20, "X": 500, "T": 100}, seed=0)
        >>> len(set(sets["A"]) & set(sets["B"]))
        0
    """
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[np.ndarray]] = {name: [] for name in per_class}
    need = sum(per_class.values())
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < need:
            raise DataError(
                f"class {label} has {len(members)} images but the split asks for {need} per class "
                f"({', '.join(f'{k}={v}' for k, v in per_class.items())})"
            )
        order = ids[members[rng.permutation(len(members))]]
        start = 0
        for name, count in per_class.items():
            chosen[name].append(order[start : start + count])
            start += count
    return {name: np.sort(np.concatenate(parts)) for name, parts in chosen.items()}


def split_checks(sets: dict[str, np.ndarray], ids: np.ndarray, labels: np.ndarray) -> dict:
    """Evidence that the split is valid: pairwise disjointness, ids exist, per-class counts."""
    label_of = dict(zip(ids.tolist(), labels.tolist()))
    known = set(label_of)
    checks: dict = {"pairwise_disjoint": {}, "all_ids_in_dataset": True, "per_class_counts": {}}
    for first, second in combinations(sets, 2):
        overlap = len(set(sets[first].tolist()) & set(sets[second].tolist()))
        checks["pairwise_disjoint"][f"{first}&{second}"] = overlap
    for name, members in sets.items():
        if not set(members.tolist()) <= known:
            checks["all_ids_in_dataset"] = False
        if len(set(members.tolist())) != len(members):
            checks["pairwise_disjoint"][f"{name}&{name}"] = len(members) - len(set(members.tolist()))
        counts = np.bincount([label_of[i] for i in members.tolist()], minlength=int(labels.max()) + 1)
        checks["per_class_counts"][name] = counts.tolist()
    checks["ok"] = checks["all_ids_in_dataset"] and not any(checks["pairwise_disjoint"].values())
    return checks
