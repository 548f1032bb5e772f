"""The leakage checks as the console and the report state them, from real splits of real images: which check
holds and which does not (with counts per pair of sets, checked by brute force), why a run with a failing check
went ahead (the built-in scenes' rule, or split.allow_leakage) or that it was refused, and thumbnails of the
flagged pairs that show the right images. A failing check never stands beside a green "all clear"."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dejavu.artifacts import load_table, read_split
from dejavu.cli import main
from dejavu.config import load_config
from dejavu.data.examples import write_example
from dejavu.data.leakage import file_sha256, perceptual_hash
from dejavu.data.leakage_outcome import ALLOWED_REASON, NEAR_DUPLICATES_DO_NOT_BLOCK, leakage_outcome
from dejavu.report.images import view
from dejavu.report.leakage import PAIRS_SHOWN, leakage_html
from dejavu.runs import Run
from tests.conftest import FINISHED

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "examples" / "tiny.yaml"
COPIES = 6
# A whole run on the built-in scenes in seconds; at 12 bits its near-duplicate check flags a dozen pairs.
TINY = [
    "data.images_per_class=40", "data.image_size=32", "data.input_size=16",
    "split.a_per_class=8", "split.b_per_class=8", "split.x_per_class=16", "split.t_per_class=8",
    "crop.min_side_px=4", "attack.k=5", "train.epochs=1", "train.batch_size=16", "train.warmup_epochs=0",
    "train.projector=32-32", "train.widths=[4,8]", "metrics.bootstrap=50", "split.near_duplicate_distance=12",
]
# The old page's reassurance, which stood in green next to a failing near-duplicate check.
OLD_REASSURANCE = "no image appears in two sets"


# Reading the section back ------------------------------------------------------------------------
class Section(HTMLParser):
    """The leakage section as data: headline class and text, each check's result and colour, the reasons,
    and the flagged pairs with their figures' ids and image URIs."""

    def __init__(self) -> None:
        super().__init__()
        self.headline_css: str | None = None
        self.headline = ""
        self.checks: dict[str, dict[str, str]] = {}
        self.reasons: list[str] = []
        self.pairs: list[dict] = []
        self.text: list[str] = []
        self._in: list[str] = []
        self._check: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "p" and "leakage-headline" in classes:
            self._in.append("headline")
        elif tag == "span" and self._in[-1:] == ["headline"]:
            self.headline_css = a.get("class", "")
        elif tag == "li" and "data-check" in a:
            self._check = a["data-check"]
            self.checks[self._check] = {"result": a["data-result"], "css": "", "text": ""}
        elif tag == "span" and self._check:
            self.checks[self._check]["css"] = a.get("class", "")
        elif tag == "p" and "leakage-reason" in classes:
            self.reasons.append("")
            self._in.append("reason")
        elif tag == "div" and "leak-pair" in classes:
            self.pairs.append({"ids": a["data-ids"].split(), "distance": a["data-distance"], "figures": []})
        elif tag == "figure" and self.pairs:
            self.pairs[-1]["figures"].append({"id": a["data-id"], "uri": ""})
        elif tag == "img" and self.pairs and self.pairs[-1]["figures"]:
            self.pairs[-1]["figures"][-1]["uri"] = a["src"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self._in:
            self._in.pop()
        if tag == "li":
            self._check = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in[-1:] == ["headline"]:
            self.headline += data
        elif self._in[-1:] == ["reason"]:
            self.reasons[-1] += data
        if self._check:
            self.checks[self._check]["text"] += data


def read_section(page: str) -> Section:
    section = Section()
    section.feed(page)
    section.full_text = " ".join(" ".join(section.text).split())
    return section


def assert_no_reassurance_beside_a_failure(section: Section) -> None:
    """The colour and words of the headline follow the worst check."""
    failing = [name for name, c in section.checks.items() if c["result"] == "does not hold"]
    assert OLD_REASSURANCE not in section.full_text
    for name, check in section.checks.items():
        # A failure the dataset's rule lets through (the scenes' near pairs) is a note; any other is red.
        expected = {"holds": {"ok"}, "does not hold": {"bad", "note"}, "not checked": {"muted"}}[check["result"]]
        assert check["css"] in expected, name
    if failing:
        red = any(section.checks[name]["css"] == "bad" for name in failing)
        assert section.headline_css == ("bad" if red else "note"), section.headline
        assert "does not hold" in section.headline or "do not hold" in section.headline
        assert "all" not in section.headline.split()
    else:
        assert "not hold" not in section.full_text


def png_pixels(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGB"))


def section_of(out: Path) -> tuple[Section, dict, object]:
    """The leakage section of a split run folder, rendered as the report does (catalog checked, with pixels)."""
    run = Run(out, load_config(None))
    table = load_table(run)
    split = read_split(run, table).payload
    page = leakage_html(split["leakage"], table, split["checks"]["pairwise_disjoint"])
    return read_section(page), split, table


def set_of(split: dict) -> dict[str, str]:
    return {image_id: name for name, members in split["sets"].items() for image_id in members}


def cross_set_pairs(split: dict, ids: np.ndarray, close) -> dict[str, int]:
    """Brute force over every pair of set members: {"A&X": count} of the pairs ``close(i, j)`` accepts."""
    where = set_of(split)
    members = [p for p, i in enumerate(ids.tolist()) if i in where]
    counts: dict[str, int] = {}
    for i, j in combinations(members, 2):
        first, second = sorted((where[ids[i]], where[ids[j]]))
        if first != second and close(i, j):
            counts[f"{first}&{second}"] = counts.get(f"{first}&{second}", 0) + 1
    return counts


def assert_thumbnails_show_the_pairs(section: Section, split: dict, table) -> None:
    """The first recorded example pairs, each drawn as its two images (the catalog's, as the gallery draws them)."""
    leakage = split["leakage"]
    examples = [*leakage["exact"]["examples"], *leakage["near"]["examples"]][:PAIRS_SHOWN]
    assert examples, "nothing flagged: the test needs flagged pairs"
    assert [p["ids"] for p in section.pairs] == [[row[0], row[2]] for row in examples]
    position = {i: p for p, i in enumerate(table.ids.tolist())}
    for pair, row in zip(section.pairs, examples):
        assert [f["id"] for f in pair["figures"]] == [row[0], row[2]]
        assert pair["distance"] == (str(row[4]) if len(row) > 4 else "")
        for figure in pair["figures"]:
            assert np.array_equal(png_pixels(figure["uri"]), view(table, position[figure["id"]], 96)[0])


# Datasets ----------------------------------------------------------------------------------------
def file_args(keys: dict) -> list[str]:
    boxes = ["--boxes", keys["annotations"]] if keys.get("annotations") else []
    return ["--config", str(TINY_CONFIG), "--dataset", keys["dataset"], "--root", keys["root"], *boxes]


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, dict]:
    """The tiny ImageNet-layout example, and a copy in which six files of class 1 also sit in class 2."""
    root = tmp_path_factory.mktemp("leakage")
    clean = write_example("imagenet", root / "clean")
    duplicated = write_example("imagenet", root / "duplicated")
    train = Path(duplicated["root"])
    for k, source in enumerate(sorted((train / "n00000001").glob("*.JPEG"))[-COPIES:]):
        shutil.copyfile(source, train / "n00000002" / f"n00000002_9{k:02d}.JPEG")
    return {"clean": clean, "duplicated": duplicated}


# All checks hold ---------------------------------------------------------------------------------
def test_all_checks_hold_in_green_with_no_warning(examples, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["split", *file_args(examples["clean"]), "--out", str(out)]) == 0
    assert "[split] warning" not in capsys.readouterr().out
    section, _, _ = section_of(out)
    assert section.headline_css == "ok" and section.headline.strip() == "Leakage checks: all 3 hold."
    assert {name: c["result"] for name, c in section.checks.items()} == {"ids": "holds", "exact": "holds",
                                                                          "near": "holds"}
    assert section.checks["ids"]["text"].startswith("ids: no image is in two sets")
    assert "exact duplicates across sets (SHA-256 of the file): 0 pairs" in section.checks["exact"]["text"]
    assert "≤ 4 of 64 bits differ): 0 pairs" in section.checks["near"]["text"]
    assert not section.reasons and not section.pairs
    assert_no_reassurance_beside_a_failure(section)


def test_a_check_turned_off_is_said_so_and_not_shown_green(examples, tmp_path):
    out = tmp_path / "run"
    assert main(["split", *file_args(examples["clean"]), "split.near_duplicate_distance=-1", "--out", str(out)]) == 0
    section, _, _ = section_of(out)
    assert section.checks["near"]["result"] == "not checked"
    assert "split.near_duplicate_distance = -1" in section.checks["near"]["text"]
    assert section.headline_css == "" and "near-duplicates were not checked" in section.headline
    assert_no_reassurance_beside_a_failure(section)


# Exact duplicates: refused, or allowed ---------------------------------------------------------
def test_exact_duplicates_refuse_the_run_and_no_report_is_written(examples, tmp_path, capsys):
    refused, allowed = tmp_path / "refused", tmp_path / "allowed"
    assert main(["run", *file_args(examples["duplicated"]), "split.drop_duplicates=false",
                 "split.near_duplicate_distance=0", "--out", str(refused)]) == 2
    error = capsys.readouterr().err
    assert not (refused / "data" / "split.json").exists() and not (refused / "report.html").exists()
    # The same seed and data give the same sets: the allowed split shows which pairs were refused.
    assert main(["split", *file_args(examples["duplicated"]), "split.drop_duplicates=false",
                 "split.near_duplicate_distance=0", "split.allow_leakage=true", "--out", str(allowed)]) == 0
    split = json.loads((allowed / "data" / "split.json").read_text())
    table = load_table(Run(allowed, load_config(None)), with_images=False)
    digests = [file_sha256(Path(p)) for p in table.paths.tolist()]
    expected = cross_set_pairs(split, table.ids, lambda i, j: digests[i] == digests[j])
    total = sum(expected.values())
    assert 0 < total <= COPIES and split["leakage"]["exact"]["by_groups"] == expected
    assert f"leakage check failed: {total} exact and 0 near-duplicate pair(s)" in error
    statement = leakage_outcome(split["leakage"])["checks"][0]["statement"]
    assert f"{statement} — does not hold" in error and "split.allow_leakage=true" in error
    assert statement.startswith(f"exact duplicates across sets (SHA-256 of the file): {total} pair")


def test_allow_leakage_proceeds_saying_which_check_fails_with_thumbnails(examples, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["split", *file_args(examples["duplicated"]), "split.drop_duplicates=false",
                 "split.near_duplicate_distance=0", "split.allow_leakage=true", "--out", str(out)]) == 0
    console = capsys.readouterr().out
    section, split, table = section_of(out)
    assert {name: c["result"] for name, c in section.checks.items()} == {"ids": "holds", "exact": "does not hold",
                                                                          "near": "holds"}
    assert section.headline.strip() == "Leakage checks: 1 of 3 does not hold (exact duplicates)."
    assert section.reasons == [("The exact duplicates check does not hold, and the run went ahead because "
                                f"{ALLOWED_REASON}.")]
    # The console says the same words as the page.
    statement = section.checks["exact"]["text"].split(" — ")[0]
    assert f"[split] warning: {statement} — does not hold; the split goes ahead because {ALLOWED_REASON}" in console
    assert_no_reassurance_beside_a_failure(section)
    assert_thumbnails_show_the_pairs(section, split, table)
    for pair in section.pairs:  # exact copies: the two files decode to the same picture
        first, second = (png_pixels(f["uri"]) for f in pair["figures"])
        assert np.array_equal(first, second)


# The built-in scenes: near-duplicates reported, not refusing -----------------------------------
@pytest.fixture(scope="module")
def scenes_run(tmp_path_factory) -> Path:
    """A whole tiny run on the built-in scenes whose near-duplicate check (at 12 bits) flags pairs."""
    out = tmp_path_factory.mktemp("scenes") / "run"
    assert main(["run", *TINY, "--out", str(out)]) in FINISHED
    return out


def test_scenes_near_duplicates_go_ahead_by_the_scenes_rule_in_the_report(scenes_run):
    page = (scenes_run / "report.html").read_text(encoding="utf-8")
    start = page.index('<p class="leakage-headline">')
    section = read_section(page[start:page.index("<h2", start)])  # up to the next section
    assert page.count('class="leakage-headline"') == 1
    run = Run(scenes_run, load_config(None))
    table = load_table(run)
    split = read_split(run, table).payload
    hashes = [perceptual_hash(image) for image in np.asarray(table.images)]
    expected = cross_set_pairs(split, table.ids, lambda i, j: bin(hashes[i] ^ hashes[j]).count("1") <= 12
                               and table.content_hashes[i] != table.content_hashes[j])
    assert expected and split["leakage"]["near"]["by_groups"] == expected
    assert {name: c["result"] for name, c in section.checks.items()} == {"ids": "holds", "exact": "holds",
                                                                          "near": "does not hold"}
    most_first = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))
    counts = ", ".join(f"{k.replace('&', '↔')} {v}" for k, v in most_first)
    assert f"≤ 12 of 64 bits differ): {sum(expected.values())} pairs ({counts})" in section.checks["near"]["text"]
    assert len(section.reasons) == 1 and "allow_leakage" not in section.reasons[0]
    assert section.reasons[0] == (f"The near-duplicates check does not hold: {NEAR_DUPLICATES_DO_NOT_BLOCK['scenes']}. "
                                  "Judge the flagged pairs below by eye.")
    # The dataset's rule, not the user's permission, let it through: a note, not red.
    assert section.headline_css == "note" and section.checks["near"]["css"] == "note"
    assert "SHA-256 of the pixels" in section.checks["exact"]["text"]
    assert_no_reassurance_beside_a_failure(section)
    assert_thumbnails_show_the_pairs(section, split, table)
    for pair in section.pairs:
        i, j = (int(np.flatnonzero(table.ids == image_id)[0]) for image_id in pair["ids"])
        assert int(pair["distance"]) == bin(hashes[i] ^ hashes[j]).count("1") <= 12


def test_the_console_notes_the_scenes_rule_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["split", *TINY, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not [line for line in lines if line.startswith("[split] warning")]
    notes = [line for line in lines if line.startswith("[split] note")]
    assert len(notes) == 1 and notes[0].endswith(f"; {NEAR_DUPLICATES_DO_NOT_BLOCK['scenes']}")
    assert len(notes[0]) < 250  # one short line


def test_old_split_json_blocks_are_still_read_honestly(scenes_run):
    split = json.loads((scenes_run / "data" / "split.json").read_text())
    # Before "dataset" (and, earlier, "blocking") were recorded, a passing split with near pairs was the scenes rule.
    old = json.loads(json.dumps(split["leakage"]))
    for key in ("dataset", "allowed"):
        old.pop(key)
    old["near"].pop("blocking")
    outcome = leakage_outcome(old)
    assert outcome["failed"] == ["near"] and outcome["checks"][1]["reason"] == NEAR_DUPLICATES_DO_NOT_BLOCK["scenes"]
    # A failing block that records no permission says so rather than inventing a reason.
    old["ok"] = False
    section = read_section(leakage_html(old))
    assert section.headline_css == "bad" and "does not record why" in section.reasons[0]
    assert_no_reassurance_beside_a_failure(section)
    # Without the catalog the pairs are named, not drawn.
    assert section.pairs and all(not f["uri"] for pair in section.pairs for f in pair["figures"])
