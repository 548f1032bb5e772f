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


def resolve_scheme(scheme: str, dataset: str) -> str:
    """``split.scheme`` "auto": the paper's partition for file datasets, "balanced" for the built-in scenes."""
    if scheme == "auto":
        return "balanced" if dataset in ("scenes", "captioned_scenes") else "paper"
    return scheme


def paper_partition(
    ids: np.ndarray, labels: np.ndarray, boxed: np.ndarray, class_names: np.ndarray, per_class: int,
    public_from_per_class: int, x_cap: int, t_per_class: int, seed: int,
) -> dict[str, np.ndarray]:
    """The partition of Meehan et al. (2023): sets A, B (attacked), shared, X, T as sorted id arrays.

    Per class, T first reserves ``t_per_class`` boxed images (the negative control attacks their crops,
    so they must have boxes; the paper has no T, and its rules then apply to the remaining images).
    The other boxed images are shuffled and halved into an A pool and a B pool; A and B take up to
    ``per_class`` each from their pool (these are the attacked images). When a pool holds fewer than
    ``per_class``, unboxed images fill *both* training sets up to ``per_class`` as the shared set: both
    models train on it, neither is attacked on it. X takes what the partition with
    ``public_from_per_class`` (>= per_class) leaves, at most ``x_cap`` per class. Because the pools and
    orders depend only on the seed and the ids, the sets for a smaller N are subsets of those for a
    larger N and the same X and T serve every N, as in the paper.

    Example:
        >>> sets = paper_partition(ids, labels, boxed, names, 300, 500, 100, 10, seed=0)
        >>> sorted(sets)
        ['A', 'B', 'T', 'X', 'shared']
    """
    rng = np.random.default_rng(seed)
    largest = max(per_class, public_from_per_class or per_class)
    chosen: dict[str, list[np.ndarray]] = {name: [] for name in ("A", "B", "shared", "X", "T")}
    for label in range(len(class_names)):
        members = labels == label
        if not members.any():
            continue
        # Sorting by id first makes the draw independent of the order the dataset was read in.
        with_boxes = rng.permutation(np.sort(ids[members & boxed]))
        without = rng.permutation(np.sort(ids[members & ~boxed]))
        held_out, with_boxes = with_boxes[:t_per_class], with_boxes[t_per_class:]
        half = len(with_boxes) // 2
        a_pool, b_pool = with_boxes[:half], with_boxes[half : 2 * half]
        t_missing = t_per_class - len(held_out)
        for n in (per_class, largest):
            missing = n - min(n, half)
            if missing + t_missing > len(without):
                raise DataError(
                    f"class '{class_names[label]}' has {len(with_boxes) + len(held_out)} boxed and {len(without)} "
                    f"unboxed images: {n} per class needs {min(n, half)} boxed images per model plus {missing} "
                    f"unboxed ones to share, and T {t_per_class} images, but only {len(without)} unboxed exist; "
                    "lower split.a_per_class (or split.public_from_per_class, split.t_per_class), "
                    "or drop the class with data.classes"
                )
        take = min(per_class, half)
        chosen["A"].append(a_pool[:take])
        chosen["B"].append(b_pool[:take])
        chosen["shared"].append(without[: per_class - take])
        used = min(largest, half)
        left_unboxed = without[largest - used :]
        chosen["T"].append(np.concatenate([held_out, left_unboxed[:t_missing]]))
        public = np.concatenate([a_pool[used:], b_pool[used:], with_boxes[2 * half :], left_unboxed[t_missing:]])
        if len(public) == 0:
            raise DataError(
                f"class '{class_names[label]}': no image is left for the public set X after A, B, the shared set "
                f"({largest} per class) and T; lower split.a_per_class or split.t_per_class"
            )
        chosen["X"].append(rng.permutation(public)[:x_cap])
    return {name: np.sort(np.concatenate(parts)) if parts else np.array([], dtype=ids.dtype)
            for name, parts in chosen.items()}
