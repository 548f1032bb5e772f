"""The data stages: the dataset (generated or read from files), the split into A/B/X/T, the crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dejavu.artifacts import CROP_COLUMNS, CROP_SETS, load_split, load_table, write_csv
from dejavu.artifacts.export import discard_export, write_export
from dejavu.data.catalog import build_scenes, discard_progress, ingest, read_entries
from dejavu.data.crops import Crop, corner_crop, periphery_crop
from dejavu.data.leakage import duplicate_keep_mask, exact_duplicate_pairs, leakage_checks, near_duplicate_pairs
from dejavu.data.leakage_outcome import leakage_outcome, near_duplicates_block
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.data.splits import paper_partition, resolve_scheme, split_checks, split_ids
from dejavu.config import BUILT_IN
from dejavu.errors import DataError
from dejavu.metrics.sanity import class_checks
from dejavu.runs import Run, write_json
from dejavu.stages.declaration import Stage


def stage_data(run: Run) -> Path:
    """The dataset as ``data/catalog.npz`` (+ the pixel cache ``data/images.npy``): generated or read from files."""
    d = run.config.data
    # An export of the split of other data is stale, and would count among this stage's files (data/).
    discard_export(run.data_dir)
    if d.dataset in BUILT_IN:
        build_scenes(d, run.seeds["data"], run.data_dir)
    else:
        try:
            entries = read_entries(d)
            print(f"[data] {len(entries)} images in {len({e.label for e in entries})} classes, "
                  f"{sum(len(e.boxes) > 0 for e in entries)} with boxes")
            ingest(entries, d, run.data_dir)
        except Exception:
            # The progress of an earlier, killed pass is stale once the dataset fails to read: a failed stage
            # leaves nothing behind (a kill, which runs no handler, keeps it for the resume).
            discard_progress(run.data_dir)
            raise
    return run.data_dir / "catalog.npz"


def _duplicate_pairs(table: ImageTable, max_distance: int) -> np.ndarray:
    pairs = [exact_duplicate_pairs(table.content_hashes)]
    if max_distance >= 0:
        pairs.append(near_duplicate_pairs(table.perceptual_hashes.astype(np.uint64), max_distance))
    return np.concatenate(pairs).reshape(-1, 2)


def _partition(run: Run, table: ImageTable, usable: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, int], str]:
    """The sets (by the config's scheme), the per-class sizes asked for, and the scheme used."""
    s = run.config.split
    scheme = resolve_scheme(s.scheme, run.config.data.dataset)
    ids, labels = table.ids[usable], table.labels[usable]
    if scheme == "paper":
        sets = paper_partition(ids, labels, table.boxed[usable], table.class_names, s.a_per_class,
                               s.public_from_per_class, s.x_per_class, s.t_per_class, run.seeds["split"])
        per_class = {"N": s.a_per_class, "public_from_N": s.public_from_per_class or s.a_per_class,
                     "X_cap": s.x_per_class, "T": s.t_per_class}
    else:
        per_class = {"A": s.a_per_class, "B": s.b_per_class, "X": s.x_per_class, "T": s.t_per_class}
        sets = split_ids(ids, labels, per_class, run.seeds["split"])
        sets["shared"] = np.array([], dtype=ids.dtype)
    return sets, per_class, scheme


def _leakage(run: Run, table: ImageTable, sets: dict[str, np.ndarray], dropped: int) -> dict:
    """Duplicates across sets; refuses the split when they block and ``split.allow_leakage`` is off, and says on
    the console which check does not hold, and why the split goes ahead, when it does."""
    s = run.config.split
    groups = np.full(len(table), "", dtype=object)
    for name, members in sets.items():
        groups[index_of_ids(table.ids, members, f"split set {name}")] = name
    leakage = leakage_checks(table.ids, groups.astype(str), table.content_hashes,
                             table.perceptual_hashes.astype(np.uint64), s.near_duplicate_distance)
    leakage["dropped_before_split"] = dropped
    leakage["allowed"] = bool(s.allow_leakage)
    leakage["dataset"] = run.config.data.dataset
    leakage["near"]["blocking"] = near_duplicates_block(run.config.data.dataset)
    outcome = leakage_outcome(leakage)
    leakage["ok"] = not outcome["blocking"]
    failing = [check for check in outcome["checks"] if check["holds"] is False]
    if outcome["blocking"] and not s.allow_leakage:
        examples = leakage["exact"]["examples"][:3] + leakage["near"]["examples"][:3]
        refusing = "; ".join(f"{check['statement']} — does not hold" for check in failing if check["blocks"])
        raise DataError(
            f"leakage check failed: {leakage['exact']['pairs']} exact and {leakage['near']['pairs']} near-duplicate "
            f"pair(s) cross two sets ({refusing}; e.g. {examples}). Expected no image in two sets: re-run with "
            "split.drop_duplicates=true to keep one image per duplicate cluster, or split.allow_leakage=true to "
            "proceed anyway (the report then says which check does not hold)"
        )
    for check in failing:
        if check["blocks"]:
            print(f"[split] warning: {check['statement']} — does not hold; the split goes ahead because "
                  f"{check['reason']}")
        else:  # the dataset's own rule: a note, not a warning
            print(f"[split] note: {check['statement']}; {check['reason']}")
    return leakage


def stage_split(run: Run) -> Path:
    """Disjoint sets A/B/X/T (+ shared), leakage checks, in ``data/split.json``; the sets as plain files
    (lists, a CSV, the scenes' pixels as PNGs) in ``data/export/``."""
    table = load_table(run, with_images=False)
    s = run.config.split
    usable = np.ones(len(table), dtype=bool)
    dropped: list[str] = []
    if s.drop_duplicates:
        usable = duplicate_keep_mask(table.ids, _duplicate_pairs(table, s.near_duplicate_distance))
        dropped = table.ids[~usable].tolist()
    sets, per_class, scheme = _partition(run, table, usable)
    checks = split_checks(sets, table.ids, table.labels)
    if not checks["ok"]:
        raise DataError(f"split failed its checks: {checks}")
    _refuse_what_cannot_show_dejavu(table, sets)
    if run.config.attack.k > len(sets["X"]):
        raise DataError(
            f"config key 'attack.k' = {run.config.attack.k} is larger than the public set X ({len(sets['X'])} images "
            "after the split); lower attack.k or raise split.x_per_class"
        )
    leakage = _leakage(run, table, sets, len(dropped))
    canaries = choose_canaries(table, sets["A"], s.canaries, run.seeds["split"])
    path = run.data_dir / "split.json"
    write_json(path, {
        "seed": run.seeds["split"],
        "scheme": scheme,
        "per_class": per_class,
        "sizes": {name: len(members) for name, members in sets.items()},
        "checks": checks,
        "leakage": leakage,
        "dropped_duplicates": dropped,
        "sets": {name: members.tolist() for name, members in sets.items()},
        "canaries": canaries.tolist(),
        "canary_repeats": s.canary_repeats,
    })
    write_export(run, table)
    return path


def _refuse_what_cannot_show_dejavu(table: ImageTable, sets: dict[str, np.ndarray]) -> None:
    """Stop before any training when a set the attack needs is empty or of one class: every vote would then
    be right (or impossible) by construction, and the sanity gates would refuse the verdict hours later."""
    labels = {name: table.labels[index_of_ids(table.ids, sets[name], f"split set {name}")] for name in ("A", "B", "X", "T")}
    failed = [check for check in class_checks(labels) if not check.passed]
    if failed:
        classes = len(np.unique(table.labels))
        raise DataError(
            f"the split cannot show déjà vu: {failed[0].detail} (the dataset has {classes} class"
            f"{'es' if classes != 1 else ''}); expected two or more classes in each of A, B, X and T: add images "
            "of other classes, or lower split.t_per_class / split.x_per_class so that every set gets some"
        )


def choose_canaries(table: ImageTable, a_ids: np.ndarray, count: int, split_seed: int) -> np.ndarray:
    """``count`` ids (sorted) drawn among A's boxed images: the canaries (``split.canaries``).

    Drawn after the split by a generator of its own (derived from the split seed), so A, B, X and T are
    the same with and without canaries."""
    if count == 0:
        return np.array([], dtype=table.ids.dtype)
    a_ids = np.sort(a_ids)
    boxed = a_ids[table.boxed[index_of_ids(table.ids, a_ids, "split set A")]]
    if count > len(boxed):
        raise DataError(
            f"config key 'split.canaries' = {count} is larger than the number of A's images with boxes "
            f"({len(boxed)} of {len(a_ids)}): lower split.canaries"
        )
    rng = np.random.default_rng([split_seed, 0xCA4A])
    return np.sort(rng.choice(boxed, size=count, replace=False))


def crop_of(table: ImageTable, position: int, c) -> Crop:
    """The crop (``crop.*`` config ``c``) of the image at ``position``: periphery or corner, or why none."""
    boxes = table.boxes_of(position)
    width, height = (int(v) for v in table.sizes[position])
    if c.mode == "corner":
        return corner_crop(boxes, width, height, c.corner_fraction)
    return periphery_crop(boxes, width, height, c.min_side_px, rule=c.rule)


def stage_crops(run: Run) -> Path:
    """Periphery (or corner) crops of every image of A, B and T into ``data/crops.csv`` (skips with reasons).

    Coordinates are full-resolution pixels of each image."""
    table = load_table(run, with_images=False)
    sets = load_split(run)
    c = run.config.crop
    rows = []
    for name in CROP_SETS:
        for position in index_of_ids(table.ids, sets[name], f"split set {name}"):
            boxes = table.boxes_of(position)
            width, height = (int(v) for v in table.sizes[position])
            crop = crop_of(table, position, c)
            rect = crop.rect or (-1, -1, -1, -1)
            square = crop.square or (-1, -1, -1, -1)
            rows.append([str(table.ids[position]), name, int(table.labels[position]), width, height, len(boxes),
                         int(crop.square is not None), crop.reason, crop.short_side, *rect, *square,
                         int(crop.overlaps_box)])
    for name in ("A", "B"):
        if not any(row[1] == name and row[6] for row in rows):
            raise DataError(
                f"no periphery crop of set {name} has a shortest side >= crop.min_side_px = "
                f"{c.min_side_px} px; lower crop.min_side_px or data.object_scale"
            )
    path = run.data_dir / "crops.csv"
    write_csv(path, CROP_COLUMNS, rows)
    return path


DATA = Stage(
    "data", stage_data, keys=("data",), seeds=("data",), outputs=("data",),
    description="generate the built-in scenes data, or read your image files (decoded, hashed and cached once)",
)
SPLIT = Stage(
    "split", stage_split, reads=("data",), keys=("split", "data.dataset"), seeds=("split",),
    also_reads={"attack.k": "checked against X's size, to refuse before training a k the split cannot serve "
                            "(the neighbours stage checks it again)"},
    outputs=("data/split.json", "data/export"),
    description="draw the disjoint sets A (target), B (reference), X (public) and T (held out); check for leakage",
)
CROPS = Stage(
    "crops", stage_crops, reads=("split",), keys=("crop",), outputs=("data/crops.csv",),
    description="cut each image of A, B and T to its periphery crop: the largest rectangle without a foreground box",
)
