"""Report sections with pictures: a sample of the crops the models saw, and the gallery of the most
confidently memorized examples with both models' nearest public neighbours (joined on ids)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import artifacts
from dejavu.artifacts import MODELS
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.errors import RunFolderError
from dejavu.metrics.tables import DIRECTIONS
from dejavu.report.images import Thumbnails, crop_figures
from dejavu.report.templating import render
from dejavu.runs import Run

# Which attacked set a direction's crops come from (A attacks set A with model A, ...).
ATTACKED_SET = {direction: attacked for direction, attacked, _, _ in DIRECTIONS}
ROLES = ("target", "reference")


# The columns of samples.csv the report reads (the gallery sorts, captions and draws from them).
SAMPLE_TEXT = ("id", "direction", "target_model", "reference_model", "partition")
SAMPLE_NUMBERS = {"label": int, "crop_x0": int, "crop_y0": int, "crop_x1": int, "crop_y1": int, "target_top1": int,
                  "reference_top1": int, "target_confidence": float, "target_correct": float,
                  "reference_correct": float}


def read_samples(path: Path, known_ids: np.ndarray | None = None) -> list[dict[str, str]]:
    """``samples.csv``'s rows, checked to hold what the report reads: the columns of :data:`SAMPLE_TEXT` and
    :data:`SAMPLE_NUMBERS`, numbers that parse, directions A or B attacked by models A and B, and (given
    ``known_ids``, the catalog's) ids of the dataset."""
    advice = artifacts.redo(path.parent, "metrics")
    if not path.is_file():
        raise RunFolderError(f"artifact '{path}' is missing: {advice}")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows, header = list(reader), reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise artifacts.refuse(path, f"is not a readable CSV file ({type(exc).__name__})",
                               "the table the metrics stage writes", advice) from None
    missing = [column for column in (*SAMPLE_TEXT, *SAMPLE_NUMBERS) if column not in header]
    if missing:
        raise artifacts.refuse(path, f"lacks the column {missing[0]!r}", "the columns the metrics stage writes", advice)
    for line, row in enumerate(rows, start=2):
        for column, kind in SAMPLE_NUMBERS.items():
            try:
                kind(row[column])
            except (TypeError, ValueError):
                raise artifacts.refuse(path, f"holds {row[column]!r} on line {line}, column {column!r}",
                                       "an integer" if kind is int else "a number", advice) from None
        if row["direction"] not in ATTACKED_SET or {row["target_model"], row["reference_model"]} != set(MODELS):
            raise artifacts.refuse(path, f"has on line {line} direction {row['direction']!r} attacked by models "
                                         f"{row['target_model']!r} and {row['reference_model']!r}",
                                   "direction A or B, attacked by models A and B", advice)
    strangers = np.setdiff1d([row["id"] for row in rows], known_ids) if known_ids is not None else []
    if len(strangers):
        raise artifacts.refuse(path, f"lists {artifacts.count(len(strangers), 'ids')} the catalog does not hold "
                                     f"(e.g. {artifacts.examples(strangers)})", "ids of the dataset's images", advice)
    return rows


def most_confident_memorized(samples: list[dict[str, str]], count: int) -> list[dict[str, str]]:
    """The ``count`` memorized rows with the highest target confidence (ties by id). A row's ``partition``
    is its most probable part, so a memorized row has the target surely right (its true label alone has
    the most votes) and the reference more likely wrong than right."""
    memorized = [row for row in samples if row["partition"] == "memorized"]
    memorized.sort(key=lambda row: (-float(row["target_confidence"]), row["id"]))
    return memorized[:count]


def class_name(table: ImageTable, label: Any) -> str:
    index = int(label)
    return str(table.class_names[index]) if 0 <= index < len(table.class_names) else f"class {index}"


class NeighbourLookup:
    """k-NN results of one (model, query set) npz, read by query id (a join, never by position)."""

    def __init__(self, run: Run, table: ImageTable) -> None:
        self.run, self.table = run, table
        self._cache: dict[tuple[str, str], tuple[dict[str, int], dict[str, np.ndarray]]] = {}

    def __call__(self, model: str, query_set: str, query_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour ids (k,) and labels (k,) of ``query_id``, nearest first."""
        key = (model, query_set)
        if key not in self._cache:
            # Checked to name only catalogued images: the gallery draws each neighbour it names.
            arrays = artifacts.load_neighbours(self.run, model, query_set, known_ids=self.table.ids)
            rows = {str(i): r for r, i in enumerate(arrays["ids"].tolist())}
            self._cache[key] = (rows, arrays)
        rows, arrays = self._cache[key]
        if query_id not in rows:
            raise artifacts.refuse(
                self.run.neighbours_dir / f"model_{model}" / f"crops_{query_set}.npz",
                f"has no neighbours of {query_id!r}, which samples.csv lists", "the queries samples.csv was computed "
                "from", artifacts.redo(self.run.root, "metrics"))
        row = rows[query_id]
        return arrays["neighbour_ids"][row].astype(str), arrays["neighbour_labels"][row]


# Sample crops ------------------------------------------------------------------------------------
def crops_data(run: Run, table: ImageTable) -> dict[str, Any]:
    """A seeded sample of kept crops of A and B, to check by eye that no object leaks into them."""
    crops = artifacts.load_crops(run, table)
    kept = np.flatnonzero(np.isin(crops["set"], ["A", "B"]) & (crops["kept"] == 1))
    wanted = min(len(kept), run.config.report.gallery)
    overlapping = None
    if "overlaps_box" in crops and run.config.crop.mode == "corner":
        overlapping = int(crops["overlaps_box"][kept].sum())
    chosen = np.sort(np.random.default_rng(0).choice(kept, size=wanted, replace=False)) if wanted else []
    positions = index_of_ids(table.ids, crops["id"][chosen], "dataset") if wanted else []
    items = []
    for row, position in zip(chosen, positions):
        square = [int(crops[f"square_{k}"][row]) for k in ("x0", "y0", "x1", "y1")]
        image_id = str(crops["id"][row])
        items.append({"id": image_id, "set": str(crops["set"][row]), "class_name": class_name(table, crops["label"][row]),
                      "figures": crop_figures(table, int(position), square, image_id)})
    return {"wanted": wanted, "kept": len(kept), "overlapping": overlapping, "examples": items}


def crops_section(run: Run, table: ImageTable) -> str:
    return render("section_crops.html", s=crops_data(run, table))


# Gallery -----------------------------------------------------------------------------------------
def _top1(table: ImageTable, row: dict[str, str], role: str) -> str:
    """A model's shown top-1 class; when its top vote is tied with the true label's, the shown class is
    only the smallest tied label, so the caption gives the chance of being right instead of hiding the tie."""
    text = f"{role} top-1 {class_name(table, row[f'{role}_top1'])}"
    chance = float(row[f"{role}_correct"])
    return text + (f" (tied vote: right with probability {chance:.0%})" if 0 < chance < 1 else "")


def _caption(table: ImageTable, row: dict[str, str]) -> str:
    return (
        f"{row['id']} · direction {row['direction']} (target model {row['target_model']}, "
        f"reference model {row['reference_model']}) · true class {class_name(table, row['label'])} · "
        f"{_top1(table, row, 'target')}, {_top1(table, row, 'reference')} · "
        f"target confidence {float(row['target_confidence']):.3g}"
    )


def _gallery_item(table: ImageTable, row: dict[str, str], position: int, neighbours: NeighbourLookup,
                  thumbnail: Thumbnails, shown: int) -> tuple[dict[str, Any], int]:
    """One memorized example: its crop figures and each model's first ``shown`` neighbours; and the
    number of neighbours searched (attack.k)."""
    label = int(row["label"])
    square = [int(row[f"crop_{k}"]) for k in ("x0", "y0", "x1", "y1")]
    query_set = ATTACKED_SET.get(row["direction"], row["direction"])
    searched = shown
    item: dict[str, Any] = {"id": row["id"], "direction": row["direction"], "label": label,
                            "caption": _caption(table, row), "rows": [],
                            "figures": crop_figures(table, position, square, row["id"])}
    for role in ROLES:
        ids, labels = neighbours(row[f"{role}_model"], query_set, row["id"])
        searched = min(searched, len(ids))
        ids, labels = ids[:shown].tolist(), labels[:shown].tolist()
        item[f"{role}_ids_json"] = json.dumps(ids)
        item["rows"].append({"role": role, "model": row[f"{role}_model"], "neighbours": [
            {"id": nid, "rank": rank, "match": int(nlabel) == label, "class_name": class_name(table, nlabel),
             "uri": thumbnail(str(nid))}
            for rank, (nid, nlabel) in enumerate(zip(ids, labels), start=1)]})
    return item, searched


def gallery_data(run: Run, table: ImageTable, samples: list[dict[str, str]]) -> dict[str, Any]:
    """The most confidently memorized examples, each with its crop and both models' neighbours."""
    wanted, shown = run.config.report.gallery, run.config.report.neighbours
    chosen = most_confident_memorized(samples, wanted)
    total = sum(row["partition"] == "memorized" for row in samples)
    neighbours, thumbnail = NeighbourLookup(run, table), Thumbnails(table)
    items, k_note = [], ""
    positions = index_of_ids(table.ids, np.array([row["id"] for row in chosen]), "dataset") if chosen else []
    for row, position in zip(chosen, list(positions)):
        item, searched = _gallery_item(table, row, int(position), neighbours, thumbnail, shown)
        items.append(item)
        if searched < shown:
            k_note = f"Only {searched} neighbours per crop were searched (attack.k), so fewer than {shown} are shown."
    return {"wanted": wanted, "total": total, "examples": items, "k_note": k_note}


def gallery_section(run: Run, table: ImageTable, samples: list[dict[str, str]]) -> str:
    return render("section_gallery.html", s=gallery_data(run, table, samples))
