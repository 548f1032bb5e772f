"""The gallery's votes and neighbours, and the report's subset sizes and p-values, against hand counts over
the artifacts of a tiny real run: the neighbours npz (neighbour ids, their labels looked up in the catalog),
samples.csv and control_samples.csv."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from dejavu.artifacts import load_table
from dejavu.attack.vote import expected_correct
from dejavu.config import load_config
from dejavu.metrics.pvalue import format_p
from dejavu.report.gallery import explaining_ranks, gallery_data, gallery_section, model_vote, read_samples, rival_class
from dejavu.report.sections import control_data, numbers_data
from dejavu.report.templating import render
from dejavu.runs import Run
from dejavu.stages import run_all

# k larger than the neighbours shown (so the choice matters) and odd shown slots (so the split is uneven).
GALLERY_RUN = [
    "data.images_per_class=40", "data.image_size=32", "data.input_size=16",
    "split.a_per_class=8", "split.b_per_class=8", "split.x_per_class=16", "split.t_per_class=8",
    "crop.min_side_px=4", "attack.k=12", "train.epochs=1", "train.batch_size=16", "train.warmup_epochs=0",
    "train.projector=32-32", "train.widths=[4,8]", "metrics.bootstrap=50", "report.neighbours=5",
    "report.gallery=40",
]
ROLES = ("target", "reference")


@pytest.fixture(scope="module")
def gallery_run(tmp_path_factory: pytest.TempPathFactory):
    run = Run(tmp_path_factory.mktemp("gallery") / "run", load_config(None, GALLERY_RUN))
    run.claim()
    run_all(run, log=lambda _: None)
    table = load_table(run)
    samples = read_samples(run.root / "samples.csv", table.ids)
    # Every crop taken as memorized, so the gallery holds right, wrong and tied votes of both models.
    everything = [{**row, "partition": "memorized"} for row in samples]
    return run, table, everything, gallery_data(run, table, everything)


def hand_neighbours(run: Run, table, row: dict[str, str], role: str) -> tuple[list[str], list[int]]:
    """The crop's k neighbour ids from the npz, and their labels as the catalog gives them."""
    with np.load(run.neighbours_dir / f"model_{row[f'{role}_model']}" / f"crops_{row['direction']}.npz") as npz:
        ids = npz["neighbour_ids"][npz["ids"].tolist().index(row["id"])].tolist()
    label_of = dict(zip(table.ids.tolist(), table.labels.tolist()))
    return ids, [int(label_of[i]) for i in ids]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_gallery_votes_equal_a_hand_count_over_the_neighbours(gallery_run) -> None:
    run, table, samples, data = gallery_run
    by_id = {row["id"]: row for row in samples}
    assert len(data["examples"]) == min(len(samples), run.config.report.gallery) > 0
    seen_fractional = False
    for item in data["examples"]:
        row = by_id[item["id"]]
        label = int(row["label"])
        for v in item["votes"]:
            ids, labels = hand_neighbours(run, table, row, v["role"])
            counts = Counter(labels)
            top = max(counts.values())
            tied = sorted(c for c, n in counts.items() if n == top)
            assert v["k"] == len(ids) == run.config.attack.k
            assert v["counts"] == [counts[c] for c in range(len(table.class_names))]
            assert v["true_votes"] == counts[label] == int(row[f"{v['role']}_true_votes"])
            assert (v["predicted"], v["predicted_votes"]) == (tied[0], top) == (int(row[f"{v['role']}_top1"]), top)
            assert v["tied"] == tied[1:]
            # Top-1 correctness as the metrics counted it: 1 of the tied classes when the true one is among them.
            hand = 1 / len(tied) if label in tied else 0.0
            assert v["correct"] == pytest.approx(hand) == pytest.approx(float(row[f"{v['role']}_correct"]), abs=1e-6)
            seen_fractional |= 0 < hand < 1
            assert f"{counts[label]} / {len(ids)} votes" in v["summary"]
            bars = {bar["label"]: bar["votes"] for bar in v["bars"]}
            assert bars[label] == counts[label] and all(bars[c] == counts[c] for c in bars)
        assert f"= {float(row['dejavu_score']):+.3f}" in item["caption"]
    # The tiny run's k = 12 votes over 10 classes tie somewhere; the fractional case is exercised.
    assert seen_fractional


def test_shown_neighbours_are_the_nearest_of_the_true_class_and_of_its_rival(gallery_run) -> None:
    run, table, samples, data = gallery_run
    by_id = {row["id"]: row for row in samples}
    shown = run.config.report.neighbours
    for item in data["examples"]:
        row = by_id[item["id"]]
        label = int(row["label"])
        for v in item["votes"]:
            ids, labels = hand_neighbours(run, table, row, v["role"])
            others = Counter(c for c in labels if c != label)
            rival = min(others, key=lambda c: (-others[c], c)) if others else None
            assert v["rival"] == rival
            true_ranks = [r for r, c in enumerate(labels, start=1) if c == label]
            rival_ranks = [r for r, c in enumerate(labels, start=1) if rival is not None and c == rival]
            groups = {group["kind"]: group for group in v["groups"]}
            got_true = [nb["rank"] for nb in groups["true"]["neighbours"]]
            got_rival = [nb["rank"] for group in v["groups"][1:] for nb in group["neighbours"]]
            # Nearest first within each class; each class gets its half of the slots unless it has fewer.
            assert got_true == true_ranks[:len(got_true)] and got_rival == rival_ranks[:len(got_rival)]
            assert len(got_true) >= min(len(true_ranks), math.ceil(shown / 2))
            assert len(got_rival) >= min(len(rival_ranks), shown // 2)
            assert len(got_true) + len(got_rival) == min(shown, len(true_ranks) + len(rival_ranks))
            for group in v["groups"]:
                for nb in group["neighbours"]:
                    assert nb["id"] == ids[nb["rank"] - 1]
                    assert nb["match"] == (labels[nb["rank"] - 1] == label)
            shown_ids = [nb["id"] for group in v["groups"] for nb in group["neighbours"]]
            assert json.loads(v["ids_json"]) == shown_ids


class Votes(HTMLParser):
    """Per gallery item: each vote block's data attributes and each neighbour's caption, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.votes: list[dict[str, str | None]] = []
        self.captions: list[str] = []
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "vote" in (found.get("class") or "").split():
            self.votes.append(found)
        self._in_caption = tag == "figcaption"

    def handle_data(self, data: str) -> None:
        if self._in_caption and data.startswith("#"):
            self.captions.append(data)
        self._in_caption = False


def test_rendered_gallery_shows_each_vote_and_each_neighbours_rank(gallery_run) -> None:
    run, table, samples, data = gallery_run
    parser = Votes()
    parser.feed(gallery_section(run, table, samples))
    expected = [v for item in data["examples"] for v in item["votes"]]
    assert [(a["data-role"], int(a["data-true-votes"] or -1), int(a["data-k"] or -1)) for a in parser.votes] == \
        [(v["role"], v["true_votes"], v["k"]) for v in expected]
    ranks = [f"#{nb['rank']} " for v in expected for group in v["groups"] for nb in group["neighbours"]]
    assert [caption[:len(rank)] for caption, rank in zip(parser.captions, ranks)] == ranks
    assert len(parser.captions) == len(ranks)


def test_a_tied_vote_reads_as_the_metrics_count_it() -> None:
    # Neighbour labels 0 0 1 1 2: classes 0 and 1 tie at 2 votes; the true class 1 is right with chance 1/2.
    counted = model_vote(np.array([0, 0, 1, 1, 2]), label=1, n_classes=3)
    assert counted["counts"] == [2, 2, 1] and counted["predicted"] == 0 and counted["tied"] == [1]
    assert counted["correct"] == 0.5
    assert rival_class(counted["counts"], 1) == 0
    # Three slots: two for the true class (ranks 3, 4), one for its rival (rank 1).
    assert explaining_ranks([0, 0, 1, 1, 2], 1, 0, 3) == [[3, 4], [1]]
    # A rival with one neighbour leaves its other slot to the true class.
    assert explaining_ranks([1, 1, 1, 2], 1, 2, 2) == [[1], [4]]
    assert explaining_ranks([1, 1, 1, 2], 1, 2, 4) == [[1, 2, 3], [4]]


def _hand_sizes(rows: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    """Per direction and pooled: the top-20 % and top-5 % cut sizes (ceil, at least one) and the expected
    number of memorized crops (sum of t(1 - r)), by hand from a samples table."""
    out: dict[str, dict[str, float]] = {}
    directions = sorted({row["direction"] for row in rows})
    for name in [*directions, "pooled"]:
        chosen = [row for row in rows if name in ("pooled", row["direction"])]
        sizes = [sum(row["direction"] == d for row in chosen) for d in directions if name in ("pooled", d)]
        out[name] = {
            "top20": sum(max(1, math.ceil(0.2 * n - 1e-9)) for n in sizes),
            "top05": sum(max(1, math.ceil(0.05 * n - 1e-9)) for n in sizes),
            "memorized": sum(float(r["target_correct"]) * (1 - float(r["reference_correct"])) for r in chosen),
            "n": len(chosen),
        }
    return out


def _check_sizes(columns: list[dict], hand: dict[str, dict[str, float]]) -> None:
    for column, name in zip(columns, hand):
        n = column["n"]
        assert n["target_acc_top20"] == n["reference_acc_top20"] == f"n = {hand[name]['top20']}"
        assert n["dejavu_score_top05"] == f"n = {hand[name]['top05']}"
        count, total = n["memorized"].split(" of ")
        assert float(count) == pytest.approx(hand[name]["memorized"], abs=0.05) and int(total) == hand[name]["n"]


def test_subset_figures_carry_the_number_of_crops_behind_them(gallery_run) -> None:
    run, *_ = gallery_run
    metrics = json.loads((run.root / "metrics.json").read_text())
    attack, control = read_rows(run.root / "samples.csv"), read_rows(run.root / "control_samples.csv")
    numbers = numbers_data(metrics, metrics["ci_level"])
    hand = _hand_sizes(attack)
    _check_sizes(numbers["pooled"], {"pooled": hand["pooled"]})
    _check_sizes(numbers["directions"], {name: hand[name] for name in metrics["directions"]})
    hand_control = _hand_sizes(control)
    columns = control_data(metrics, metrics["ci_level"])["columns"]
    _check_sizes(columns, {"pooled": hand_control["pooled"], **{name: hand_control[name]
                                                               for name in metrics["control"]["directions"]}})


def test_one_p_value_format_in_the_verdict_and_the_tables(gallery_run) -> None:
    run, *_ = gallery_run
    metrics = json.loads((run.root / "metrics.json").read_text())
    sentence = metrics["outcomes"]["image"]["sentence"]
    assert f"p = {format_p(metrics['mcnemar_p'])}" in sentence
    assert f"p = {format_p(metrics['control']['mcnemar_p'])})" in sentence
    page = (run.root / "report.html").read_text(encoding="utf-8")
    assert f"<td>exact McNemar p</td><td>{format_p(metrics['mcnemar_p'])}</td>" in page
    assert [format_p(p) for p in (1.0, 0.0312, 1.0534e-08, 0.0)] == ["1", "0.0312", "1.05e-08", "< 1e-300"]


def test_top5_is_marked_uninformative_with_at_most_five_classes(gallery_run) -> None:
    run, *_ = gallery_run
    metrics = json.loads((run.root / "metrics.json").read_text())
    # The note's claim, on every vote of k = 12 over 2 to 5 classes: top-5 is right iff the true class got a vote.
    rng = np.random.default_rng(0)
    for classes in range(2, 6):
        counts = np.stack([np.bincount(rng.integers(0, classes, 12), minlength=classes) for _ in range(200)])
        labels = rng.integers(0, classes, 200)
        assert (expected_correct(counts, labels, 5) == (counts[np.arange(200), labels] > 0)).all()
    few, many = numbers_data(metrics, 0.95, n_classes=5), numbers_data(metrics, 0.95, n_classes=6)
    marked = [row["key"] for row in few["rows"] if "uninformative" in row["label"]]
    assert marked == ["target_top5_acc", "reference_top5_acc"] and "5 classes" in few["top5_note"]
    assert not [row for row in many["rows"] if "uninformative" in row["label"]] and not many["top5_note"]
    page = render("section_numbers.html", s=few)
    assert few["top5_note"].replace("'", "&#39;") in page
