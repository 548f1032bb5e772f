"""The split's leakage checks in the report: which check holds and which does not (in the words of
:mod:`dejavu.data.leakage_outcome`, which the split stage's console warning uses too), why a run with a failing
check went ahead, and thumbnails of the flagged pairs so that a reader can judge them by eye."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from dejavu.data.leakage_outcome import LABELS, leakage_outcome
from dejavu.data.records import ImageTable
from dejavu.report.gallery import class_name
from dejavu.report.images import Thumbnails
from dejavu.report.templating import render

# Flagged pairs drawn as thumbnails (split.json keeps up to 20 examples per check); a few are enough to see
# whether they are copies, and each costs two small PNGs in a page that must stay one light file.
PAIRS_SHOWN = 8
RESULTS = {True: ("holds", "ok"), False: ("does not hold", "bad"), None: ("not checked", "muted")}


def leakage_data(leakage: Mapping[str, Any] | None, table: ImageTable | None = None,
                 disjoint: Mapping[str, int] | None = None) -> dict[str, Any] | None:
    """What the leakage part of the split section shows: the headline (red when any check does not hold, green
    only when every check ran and holds), each check with its result, why the run went ahead despite a failing
    check, and the flagged pairs (drawn when ``table`` is given). disjoint: the split checks' ``pairwise_disjoint``."""
    if not leakage:
        return None
    outcome = leakage_outcome(leakage, disjoint)
    # A failure the dataset's rule lets through (near pairs of the built-in scenes) is a note, not red.
    checks = [{"name": c["name"], "statement": c["statement"], "result": RESULTS[c["holds"]][0],
               "css": "note" if c["holds"] is False and not c["blocks"] else RESULTS[c["holds"]][1]}
              for c in outcome["checks"]]
    all_ran = all(c["holds"] is not None for c in outcome["checks"])
    headline_css = ("bad" if outcome["blocking"] else "note" if outcome["failed"] else "ok" if all_ran else "")
    # exempt: went ahead by the dataset's rule, not by the user's choice; the reader is asked to judge the pairs.
    reasons = [{"label": LABELS[c["name"]], "reason": c["reason"], "exempt": not c["blocks"]}
               for c in outcome["checks"] if c["holds"] is False]
    examples = [*leakage.get("exact", {}).get("examples", []), *leakage.get("near", {}).get("examples", [])]
    total = int(leakage.get("exact", {}).get("pairs", 0)) + int(leakage.get("near", {}).get("pairs", 0))
    return {"headline": outcome["headline"], "headline_css": headline_css, "checks": checks, "reasons": reasons,
            "dropped": int(leakage.get("dropped_before_split", 0)), "total_pairs": total,
            "recorded_pairs": len(examples), "pairs": flagged_pairs(examples[:PAIRS_SHOWN], table)}


def flagged_pairs(examples: Sequence[Sequence[Any]], table: ImageTable | None) -> list[dict[str, Any]]:
    """Each example row of split.json (id, set, id, set[, Hamming distance]) with both images' thumbnails
    (the gallery's :class:`~dejavu.report.images.Thumbnails`), class names and what makes the pair flagged."""
    thumbnails = Thumbnails(table) if table is not None else None
    pairs = []
    for row in examples:
        images = []
        for image_id, set_name in ((str(row[0]), str(row[1])), (str(row[2]), str(row[3]))):
            # An id the catalog no longer holds (split.json from another catalog) is named, not drawn.
            position = thumbnails.position_of.get(image_id) if thumbnails else None
            images.append({"id": image_id, "set": set_name,
                           "uri": thumbnails(image_id) if position is not None else "",
                           "note": "not in the catalog" if thumbnails and position is None else "",
                           "class_name": class_name(table, table.labels[position]) if position is not None else ""})
        distance = int(row[4]) if len(row) > 4 else None
        what = "identical content (SHA-256)" if distance is None else f"{distance} of 64 hash bits differ"
        pairs.append({"images": images, "distance": "" if distance is None else distance, "what": what})
    return pairs


def leakage_html(leakage: Mapping[str, Any] | None, table: ImageTable | None = None,
                 disjoint: Mapping[str, int] | None = None) -> str:
    return render("section_leakage.html", leakage=leakage_data(leakage, table, disjoint))
