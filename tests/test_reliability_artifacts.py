"""Artifacts re-checked when read back (issue 12, item 3): a tampered split, crops table, catalog,
embeddings or neighbours file stops the stage that reads it with one line naming the file, and the
advice in that line, followed literally, brings the run back.

One tiny run is built once; each case tampers with a copy of it."""

import csv
import json
import re
import shlex
import shutil

import faiss
import numpy as np
import pytest
import torch

from dejavu.cli import main
from tests.conftest import FINISHED, TINY, resign


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished tiny run (one thread: a tiny run is slower with two on busy cores)."""
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("artifacts") / "base"
    try:
        code = main(["run", "--config", "configs/smoke.yaml", "--out", str(out), "threads=1", *TINY])
        assert code in FINISHED
        yield out
    finally:
        # The CLI sets the process's threads from the run's config; later tests expect conftest's.
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)


# Tamperings ----------------------------------------------------------------------------------------
def _split(root, change):
    path = root / "data" / "split.json"
    split = json.loads(path.read_text())
    change(split)
    path.write_text(json.dumps(split))


def b_equals_a(root):
    _split(root, lambda s: s["sets"].update(B=s["sets"]["A"]))


def x_id_also_in_a(root):
    _split(root, lambda s: s["sets"]["A"].append(s["sets"]["X"][0]))


def x_missing(root):
    _split(root, lambda s: s["sets"].pop("X"))


def x_empty(root):
    _split(root, lambda s: s["sets"].update(X=[]))


def unknown_id(root):
    _split(root, lambda s: s["sets"]["A"].__setitem__(0, "no_such_image"))


def canaries_not_in_a(root):
    _split(root, lambda s: s.update(canaries=[s["sets"]["X"][0]], canary_repeats=3))


def _crops(root, change):
    path = root / "data" / "crops.csv"
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    change(rows)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def text_cell(root):
    _crops(root, lambda rows: rows[1].__setitem__(rows[0].index("width"), "abc"))


def missing_column(root):
    def drop(rows):
        where = rows[0].index("kept")
        for row in rows:
            del row[where]
    _crops(root, drop)


def square_outside(root):
    def widen(rows):
        header = rows[0]
        kept = next(row for row in rows[1:] if row[header.index("kept")] == "1")
        kept[header.index("square_x1")] = str(int(kept[header.index("width")]) + 5)
    _crops(root, widen)


def _truncate(relative):
    def tamper(root):
        path = root / relative
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return tamper


def _npz(relative, change):
    def tamper(root):
        path = root / relative
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        change(arrays)
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
    return tamper


PUBLIC_A = "embeddings/model_A/public_X.npz"
NEIGHBOURS_A = "neighbours/model_A/crops_A.npz"

# (tampering, the command of a stage that reads the file, the file, words of the error)
CASES = {
    "B = A in split.json": (b_equals_a, "crops", "data/split.json", "in both set A and set B"),
    "an X id also in A": (x_id_also_in_a, "crops", "data/split.json", "in both set A and set X"),
    "X missing": (x_missing, "crops", "data/split.json", "has no set X"),
    "X empty": (x_empty, "crops", "data/split.json", "has an empty set X"),
    "an unknown id": (unknown_id, "crops", "data/split.json", "does not hold (e.g. 'no_such_image')"),
    "canaries not in A": (canaries_not_in_a, "metrics", "data/split.json", "canary outside set A"),
    "a text cell in crops.csv": (text_cell, "metrics", "data/crops.csv", "holds 'abc' on line 2, column 'width'"),
    "a missing column": (missing_column, "metrics", "data/crops.csv", "lacks the column 'kept'"),
    "a crop square outside its image": (square_outside, "metrics", "data/crops.csv", "kept crop square"),
    "a truncated catalog": (_truncate("data/catalog.npz"), "split", "data/catalog.npz", "is damaged"),
    "a truncated embeddings npz": (_truncate("embeddings/model_B/public_X.npz"), "sanity",
                                   "embeddings/model_B/public_X.npz", "is damaged"),
    "a truncated neighbours npz": (_truncate(NEIGHBOURS_A), "metrics", NEIGHBOURS_A, "is damaged"),
    "embeddings with a row fewer than ids": (
        _npz(PUBLIC_A, lambda a: a.update(embeddings=a["embeddings"][:-1])), "sanity", PUBLIC_A,
        "holds 'embeddings' of shape"),
    "embeddings flattened to 1-D": (
        _npz(PUBLIC_A, lambda a: a.update(embeddings=a["embeddings"].ravel())), "sanity", PUBLIC_A,
        "holds 'embeddings' of shape"),
    "neighbours with k - 1 columns": (
        _npz(NEIGHBOURS_A, lambda a: a.update({k: a[k][:, :-1] for k in ("neighbour_ids", "neighbour_labels",
                                                                          "distances")})),
        "metrics", NEIGHBOURS_A, "shape (N="),
}


# One case per file follows the whole advice (its stage's command, then `dejavu run`: every stage that read
# the file again, the report included); the others, to keep the file fast, its first command and then the
# refused command again.
WHOLE_ADVICE = ("B = A in split.json", "a text cell in crops.csv", "a truncated catalog", "a truncated embeddings npz",
                "a truncated neighbours npz")


@pytest.mark.parametrize("case", list(CASES))
def test_a_tampered_artifact_is_refused_in_one_line_and_the_advice_restores_the_run(base, tmp_path, capsys, case):
    tamper, command, relative, words = CASES[case]
    copy = tmp_path / "run"
    shutil.copytree(base, copy)
    tamper(copy)
    resign(copy)  # a stage that reads the file must still check it (the signature would have caught the edit)
    capsys.readouterr()
    assert main([command, "--out", str(copy)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"dejavu: error: artifact '{copy / relative}' ") and words in lines[0], lines[0]
    advice = [shlex.split(step) for step in re.findall(r"`dejavu ([^`]+)`", lines[0])]
    assert len(advice) == 2 and advice[1] == ["run", "--out", str(copy)], lines[0]
    steps = advice if case in WHOLE_ADVICE else [advice[0], [command, "--out", str(copy)]]
    for step in steps:
        assert main(step) == 0, (step, capsys.readouterr().err)


def test_an_artifact_edited_after_its_stage_finished_is_computed_again(base, tmp_path, capsys):
    """Without re-signing, the edit itself is noticed: `dejavu run` recomputes the split (and what read
    it) instead of trusting the edited file, and ends with the original numbers."""
    copy = tmp_path / "run"
    shutil.copytree(base, copy)
    b_equals_a(copy)
    capsys.readouterr()
    assert main(["run", "--out", str(copy)]) in FINISHED
    printed = capsys.readouterr().out
    assert "[split] data/split.json changed or vanished after the stage finished: computing it again" in printed
    assert "[data] up to date, skipped" in printed
    assert json.loads((copy / "data" / "split.json").read_text())["sets"] == \
        json.loads((base / "data" / "split.json").read_text())["sets"]
    original, again = (json.loads((root / "metrics.json").read_text()) for root in (base, copy))
    assert {k: again[k] for k in ("target_acc", "reference_acc", "mcnemar_p")} == \
        {k: original[k] for k in ("target_acc", "reference_acc", "mcnemar_p")}
