"""Report sections with pictures: a sample of the crops the models saw, and the gallery of the most
confidently memorized examples with both models' votes over their k public neighbours and the neighbours
that explain each vote (joined on ids)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dejavu import artifacts
from dejavu.attack.vote import expected_correct, top_predictions, vote
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.errors import RunFolderError
from dejavu.metrics.tables import DIRECTIONS
from dejavu.report.images import Thumbnails, crop_figures
from dejavu.report.templating import render
from dejavu.runs import Run

# Which attacked set a direction's crops come from (A attacks set A with model A, ...).
ATTACKED_SET = {direction: attacked for direction, attacked, _, _ in DIRECTIONS}
ROLES = ("target", "reference")
# (direction, target, reference) of a samples.csv row: the two-model test's directions, and the one-model
# test's direction A, where the correlation classifier is the reference.
ATTACKS = {*((d, t, r) for d, _, t, r in DIRECTIONS), ("A", "A", artifacts.CLASSIFIER)}
# control_samples.csv's: T's halves playing A and B (the one-model test's T is one set against the classifier).
CONTROL_ATTACKS = {("T1", "A", "B"), ("T2", "B", "A"), ("T", "A", artifacts.CLASSIFIER)}


# The columns of samples.csv the report reads (the gallery sorts, captions and draws from them).
SAMPLE_TEXT = ("id", "direction", "target_model", "reference_model", "partition")
SAMPLE_NUMBERS = {"label": int, "crop_x0": int, "crop_y0": int, "crop_x1": int, "crop_y1": int, "target_top1": int,
                  "reference_top1": int, "target_confidence": float, "target_correct": float,
                  "reference_correct": float}


def read_samples(path: Path, known_ids: np.ndarray | None = None, attacks: set = ATTACKS) -> list[dict[str, str]]:
    """``samples.csv``'s rows, checked to hold what the report reads: the columns of :data:`SAMPLE_TEXT` and
    :data:`SAMPLE_NUMBERS`, numbers that parse, directions A or B attacked by models A and B (``attacks``:
    :data:`CONTROL_ATTACKS` for ``control_samples.csv``), and (given ``known_ids``, the catalog's) ids of the
    dataset."""
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
        if (row["direction"], row["target_model"], row["reference_model"]) not in attacks:
            raise artifacts.refuse(path, f"has on line {line} direction {row['direction']!r} attacked by models "
                                         f"{row['target_model']!r} and {row['reference_model']!r}",
                                   "one of " + ", ".join(f"{d} ({t} against {r})" for d, t, r in sorted(attacks)), advice)
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
            # Checked to name only catalogued images (the gallery draws each neighbour it names) and labels
            # of known classes (the gallery counts the vote).
            arrays = artifacts.load_neighbours(self.run, model, query_set, known_ids=self.table.ids,
                                              n_classes=len(self.table.class_names))
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

    def probabilities(self, query_set: str, query_id: str) -> np.ndarray:
        """The one-model test's classifier: its class probabilities (C,) of the crop ``query_id``."""
        key = (artifacts.CLASSIFIER, query_set)
        if key not in self._cache:
            arrays = artifacts.load_probabilities(self.run, query_set, n_classes=len(self.table.class_names))
            self._cache[key] = ({str(i): r for r, i in enumerate(arrays["ids"].tolist())}, arrays)
        rows, arrays = self._cache[key]
        if query_id not in rows:
            raise artifacts.refuse(
                self.run.model_dir(artifacts.CLASSIFIER) / f"probabilities_{query_set}.npz",
                f"has no probabilities of {query_id!r}, which samples.csv lists", "the crops samples.csv was "
                "computed from", artifacts.redo(self.run.root, "metrics"))
        return arrays["probabilities"][rows[query_id]]


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
# At most this many classes get a bar in a vote's histogram (plus the true class when it is not among
# them); the rest are summed in one line, so a 1000-class vote stays a small chart.
HISTOGRAM_BARS = 10


def model_vote(neighbour_labels: np.ndarray, label: int, n_classes: int) -> dict[str, Any]:
    """One model's vote on one crop, counted as the metrics stage counts it (:mod:`dejavu.attack.vote`):
    ``k``, ``counts`` (per class), ``true_votes``, ``predicted`` (the shown top-1: the most voted class,
    the smallest label among equal votes) with ``predicted_votes``, ``tied`` (the other classes with as
    many votes as the top), and ``correct``, the top-1 correctness the metrics used (fractional when the
    true label is tied for the top: the chance a random tie-break picks it)."""
    counts = vote(np.asarray(neighbour_labels)[None, :], n_classes)
    row = counts[0]
    predicted = int(top_predictions(counts, 1)[0, 0])
    return {
        "k": int(row.sum()),
        "counts": row.tolist(),
        "true_votes": int(row[label]),
        "predicted": predicted,
        "predicted_votes": int(row[predicted]),
        "tied": [int(c) for c in np.flatnonzero(row == row[predicted]) if c != predicted],
        "correct": float(expected_correct(counts, np.array([label]), 1)[0]),
    }


def rival_class(counts: Sequence[int], label: int) -> int | None:
    """The most voted class other than the true one (the smallest label among equal votes), None when no
    neighbour carries another class. When the model is wrong it is the predicted class."""
    others = [(-votes, c) for c, votes in enumerate(counts) if c != label and votes > 0]
    return min(others)[1] if others else None


def explaining_ranks(neighbour_labels: Sequence[int], label: int, rival: int | None, shown: int) -> list[list[int]]:
    """1-based ranks among the k of the nearest neighbours of the true class and of ``rival``: half of the
    ``shown`` slots each (the true class gets the odd one), a group's unused slots going to the other."""
    labels = [int(v) for v in neighbour_labels]
    true_ranks = [r for r, v in enumerate(labels, start=1) if v == label]
    rival_ranks = [r for r, v in enumerate(labels, start=1) if rival is not None and v == rival]
    true_slots = max((shown + 1) // 2, shown - len(rival_ranks))
    true_take = true_ranks[:true_slots]
    return [true_take, rival_ranks[:shown - len(true_take)]]


def vote_bars(counts: Sequence[int], label: int, predicted: int,
              k: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The histogram's bars (votes, share of k, whether true or predicted), most voted first, the true
    class always among them; and what is left out (``classes``, ``votes``)."""
    voted = sorted((c for c, votes in enumerate(counts) if votes > 0), key=lambda c: (-counts[c], c))
    kept = voted[:HISTOGRAM_BARS]
    if label not in kept:
        kept.append(label)
    bars = [{"label": c, "votes": int(counts[c]), "width": f"{100 * counts[c] / max(k, 1):.1f}",
             "true": c == label, "predicted": c == predicted} for c in kept]
    rest = [c for c in voted if c not in kept]
    return bars, {"classes": len(rest), "votes": int(sum(counts[c] for c in rest))}


def vote_summary(table: ImageTable, label: int, counted: dict[str, Any]) -> str:
    """The vote in words: the true class's votes of k, the prediction, and the top-1 correctness the
    metrics counted (with the tie that makes it fractional)."""
    k, predicted = counted["k"], counted["predicted"]
    text = f"true class {class_name(table, label)}: {counted['true_votes']} / {k} votes · predicted "
    tied = [predicted, *counted["tied"]]
    if len(tied) > 1:
        names = ", ".join(class_name(table, c) for c in tied)
        text += (f"one of {names} (tied at {counted['predicted_votes']} votes each; "
                 f"shown top-1 {class_name(table, predicted)})")
    else:
        text += f"{class_name(table, predicted)} ({counted['predicted_votes']} votes)"
    correct = counted["correct"]
    text += f" · top-1 counted as right: {correct:.3g}"
    if 0 < correct < 1:
        text += f" (the true class is 1 of {len(tied)} tied classes: a random tie-break picks it with that chance)"
    return text


def _neighbour(table: ImageTable, ids: np.ndarray, labels: np.ndarray, rank: int, label: int,
               thumbnail: Thumbnails) -> dict[str, Any]:
    nid, nlabel = str(ids[rank - 1]), int(labels[rank - 1])
    return {"id": nid, "rank": rank, "match": nlabel == label, "class_name": class_name(table, nlabel),
            "uri": thumbnail(nid)}


def model_block(table: ImageTable, row: dict[str, str], role: str, ids: np.ndarray, labels: np.ndarray,
                thumbnail: Thumbnails, shown: int) -> dict[str, Any]:
    """One model's vote on a gallery crop: counts, histogram, and the neighbours that explain it."""
    label = int(row["label"])
    counted = model_vote(labels, label, len(table.class_names))
    rival = rival_class(counted["counts"], label)
    true_ranks, rival_ranks = explaining_ranks(labels, label, rival, shown)
    bars, others = vote_bars(counted["counts"], label, counted["predicted"], counted["k"])
    for bar in bars:
        bar["class_name"] = class_name(table, bar["label"])
    groups = [{"kind": "true", "heading": f"nearest of the true class {class_name(table, label)}", "ranks": true_ranks}]
    if rival is not None:
        kind = "predicted" if rival == counted["predicted"] else "rival"
        what = "the predicted class" if kind == "predicted" else "the strongest other class"
        groups.append({"kind": kind, "heading": f"nearest of {what} {class_name(table, rival)} "
                                                f"({counted['counts'][rival]} votes)", "ranks": rival_ranks})
    for group in groups:
        group["neighbours"] = [_neighbour(table, ids, labels, rank, label, thumbnail) for rank in group["ranks"]]
    return {"role": role, "model": row[f"{role}_model"], **counted, "rival": rival,
            "summary": vote_summary(table, label, counted), "bars": bars, "others": others, "groups": groups,
            "ids_json": json.dumps([nb["id"] for group in groups for nb in group["neighbours"]])}


def classifier_block(table: ImageTable, row: dict[str, str], probabilities: np.ndarray) -> dict[str, Any]:
    """The one-model test's reference on a gallery crop: the correlation classifier's class probabilities
    (as :func:`model_block`'s bars, in per cent), with no neighbours behind them."""
    label, p = int(row["label"]), np.asarray(probabilities, np.float64)
    predicted = int(top_predictions(p[None, :], 1)[0, 0])
    bars, others = vote_bars(p.tolist(), label, predicted, 1)
    for bar in bars:
        bar["class_name"] = class_name(table, bar["label"])
        bar["votes"] = f"{100 * p[bar['label']]:.0f} %"
    others["votes"] = f"{100 * sum(p[c] for c in range(len(p)) if c not in {b['label'] for b in bars}):.0f} %"
    correct = float(expected_correct(p[None, :], np.array([label]), 1)[0])
    summary = (f"true class {class_name(table, label)}: probability {p[label]:.1%} · predicted "
               f"{class_name(table, predicted)} ({p[predicted]:.1%}) · top-1 counted as right: {correct:.3g}")
    return {"role": "reference", "model": row["reference_model"], "k": 1, "counts": p.tolist(),
            "true_votes": float(p[label]), "predicted": predicted, "predicted_votes": float(p[predicted]), "tied": [],
            "correct": correct, "rival": None, "summary": summary, "bars": bars, "others": others, "groups": [],
            "ids_json": "[]"}


def _caption(table: ImageTable, row: dict[str, str], votes: dict[str, dict[str, Any]]) -> str:
    target, reference = votes["target"], votes["reference"]
    if row["reference_model"] == artifacts.CLASSIFIER:
        return (f"{row['id']} · one-model test (target model {row['target_model']} against the correlation classifier) "
                f"· true class {class_name(table, row['label'])} · target confidence "
                f"{float(row['target_confidence']):.3g} · true-class votes {target['true_votes']}/{target['k']}, "
                f"classifier probability {reference['true_votes']:.3f}")
    score = (target["true_votes"] / target["k"]) - (reference["true_votes"] / reference["k"])
    return (
        f"{row['id']} · direction {row['direction']} (target model {row['target_model']}, "
        f"reference model {row['reference_model']}) · true class {class_name(table, row['label'])} · "
        f"target confidence {float(row['target_confidence']):.3g} · déjà vu score "
        f"{target['true_votes']}/{target['k']} − {reference['true_votes']}/{reference['k']} = {score:+.3f}"
    )


def _gallery_item(table: ImageTable, row: dict[str, str], position: int, neighbours: NeighbourLookup,
                  thumbnail: Thumbnails, shown: int) -> dict[str, Any]:
    """One memorized example: its crop figures and each model's vote with the neighbours behind it."""
    square = [int(row[f"crop_{k}"]) for k in ("x0", "y0", "x1", "y1")]
    query_set = ATTACKED_SET.get(row["direction"], row["direction"])
    votes = {role: classifier_block(table, row, neighbours.probabilities(query_set, row["id"]))
             if row[f"{role}_model"] == artifacts.CLASSIFIER else
             model_block(table, row, role, *neighbours(row[f"{role}_model"], query_set, row["id"]), thumbnail, shown)
             for role in ROLES}
    return {"id": row["id"], "direction": row["direction"], "label": int(row["label"]),
            "caption": _caption(table, row, votes), "votes": [votes[role] for role in ROLES],
            "figures": crop_figures(table, position, square, row["id"])}


def gallery_data(run: Run, table: ImageTable, samples: list[dict[str, str]]) -> dict[str, Any]:
    """The most confidently memorized examples, each with its crop and both models' votes: counts over
    the k neighbours (from the neighbours npz), and the nearest neighbours of the true class and of its
    strongest rival, each with its rank among the k."""
    wanted, shown = run.config.report.gallery, run.config.report.neighbours
    chosen = most_confident_memorized(samples, wanted)
    total = sum(row["partition"] == "memorized" for row in samples)
    neighbours, thumbnail = NeighbourLookup(run, table), Thumbnails(table)
    positions = index_of_ids(table.ids, np.array([row["id"] for row in chosen]), "dataset") if chosen else []
    items = [_gallery_item(table, row, int(position), neighbours, thumbnail, shown)
             for row, position in zip(chosen, list(positions))]
    return {"wanted": wanted, "total": total, "shown": shown, "examples": items}


def gallery_section(run: Run, table: ImageTable, samples: list[dict[str, str]]) -> str:
    return render("section_gallery.html", s=gallery_data(run, table, samples))
