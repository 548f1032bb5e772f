"""``data/split.json`` read back and re-checked (sets disjoint and known, canaries in A), and the rows a
model trains on."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from dejavu.artifacts.catalog import load_table
from dejavu.artifacts.files import check_unique, count, describe, examples, read_artifact_json, redo, refuse
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.data.splits import SET_NAMES, split_checks
from dejavu.errors import DataError
from dejavu.runs import Run

SPLIT_SETS = (*SET_NAMES, "shared")


# Split -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """``data/split.json`` as checked: the id arrays (A, B, X, T, shared, in the file's order), the canaries
    and their repeats, and the file's other fields with ``sizes`` and ``checks`` recomputed from the sets."""

    sets: dict[str, np.ndarray]
    canaries: np.ndarray
    canary_repeats: int
    payload: dict[str, Any]


def read_split(run: Run, table: ImageTable | None = None) -> Split:
    """``data/split.json`` checked against itself and the catalog (``table``, read when not given).

    Each set a list of string ids without duplicates; A, B, X, T non-empty; the sets pairwise disjoint
    (recomputed: the stored checks are not trusted); every id in the catalog; the canaries in A, their
    repeats a positive integer."""
    path, advice = run.data_dir / "split.json", redo(run.root, "split")
    payload = read_artifact_json(path, advice)
    stored = payload.get("sets") if isinstance(payload, dict) else None
    if not isinstance(stored, dict):
        raise refuse(path, f"holds {describe(payload)} without a 'sets' object",
                     "an object whose 'sets' maps A, B, X, T (and shared) to lists of ids", advice)
    sets = {name: _id_list(path, f"set {name}", stored.get(name), advice) for name in (*stored, *SPLIT_SETS)
            if name in stored or name in SET_NAMES}
    unknown = [name for name in sets if name not in SPLIT_SETS]
    if unknown:
        raise refuse(path, f"holds an unknown set {unknown[0]!r}", f"only the sets {', '.join(SPLIT_SETS)}", advice)
    sets.setdefault("shared", np.array([], dtype=str))
    for name in SET_NAMES:
        if len(sets[name]) == 0:
            raise refuse(path, f"has an empty set {name}", "at least one id in each of A, B, X and T", advice)
    for name, members in sets.items():
        check_unique(path, members, f"ids of set {name}", advice)
    for first, second in combinations(sets, 2):
        both = np.intersect1d(sets[first], sets[second])
        if len(both):
            raise refuse(path, f"puts {count(len(both), 'ids')} in both set {first} and set {second} (e.g. "
                               f"{examples(both)})", "disjoint sets, no image in two of them", advice)
    table = table if table is not None else load_table(run, with_images=False)
    for name, members in sets.items():
        unknown_ids = members[~np.isin(members, table.ids)]
        if len(unknown_ids):
            raise refuse(path, f"lists {count(len(unknown_ids), 'ids')} in set {name} that "
                               f"'{run.data_dir / 'catalog.npz'}' does not hold (e.g. {examples(unknown_ids)})",
                         "ids of the dataset's images", advice)
    canaries, repeats = _canaries(path, payload, sets["A"], advice)
    payload = {**payload, "sizes": {name: len(members) for name, members in sets.items()},
               "checks": split_checks(sets, table.ids, table.labels)}
    return Split(sets, canaries, repeats, payload)


def _id_list(path: Path, what: str, value: Any, advice: str) -> np.ndarray:
    if value is None:
        raise refuse(path, f"has no {what}", "sets A, B, X and T (and optionally shared)", advice)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        odd = [item for item in value if not isinstance(item, str)] if isinstance(value, list) else []
        inside = f" holding {describe(odd[0])}" if odd else ""
        raise refuse(path, f"gives {what} as {describe(value)}{inside}", f"{what} as a list of string ids", advice)
    return np.array(value, dtype=str)


def _canaries(path: Path, payload: dict[str, Any], a_ids: np.ndarray, advice: str) -> tuple[np.ndarray, int]:
    # Splits written before canaries existed have neither key: no canaries, each image seen once.
    canaries = _id_list(path, "'canaries'", payload.get("canaries", []), advice)
    repeats = payload.get("canary_repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise refuse(path, f"gives 'canary_repeats' = {repeats!r}", "a positive integer", advice)
    check_unique(path, canaries, "canaries", advice)
    outside = canaries[~np.isin(canaries, a_ids)]
    if len(outside):
        raise refuse(path, f"lists {count(len(outside), 'canaries')} outside set A (e.g. {examples(outside)})",
                     "canaries drawn from set A", advice)
    return canaries, int(repeats)


def load_split(run: Run, table: ImageTable | None = None) -> dict[str, np.ndarray]:
    """The split's id arrays, checked (see :func:`read_split`): A, B, X, T and ``shared`` (empty for the
    balanced scheme)."""
    return read_split(run, table).sets


def load_canaries(run: Run, table: ImageTable | None = None) -> tuple[np.ndarray, int]:
    """The canary ids (empty when off, or for a split written before canaries existed) and their repeats."""
    split = read_split(run, table)
    return split.canaries, split.canary_repeats


# Rows of the training sets -----------------------------------------------------------------------
def own_rows(table: ImageTable, sets: dict[str, np.ndarray], model: str) -> np.ndarray:
    """Table rows of model ``model``'s training set: its set plus the shared set, each image once."""
    return index_of_ids(table.ids, np.concatenate([sets[model], sets["shared"]]), f"split set {model}")


def training_rows(table: ImageTable, sets: dict[str, np.ndarray], model: str, canaries: np.ndarray,
                  repeats: int) -> np.ndarray:
    """Table rows model ``model`` trains on: its set plus the shared set; for model A, each canary's row is
    appended ``repeats - 1`` more times (so an epoch shows it ``repeats`` times). Model B: no canaries."""
    rows = own_rows(table, sets, model)
    if model != "A" or len(canaries) == 0 or repeats <= 1:
        return rows
    extra = index_of_ids(table.ids, np.asarray(canaries), "canaries")
    if not np.isin(extra, rows).all():
        raise DataError("split.json lists canaries that are not in set A; re-run the split stage")
    return np.concatenate([rows, np.tile(extra, repeats - 1)])
