"""What every reader of a run folder's artifacts shares: the one-line refusal (file, what was found, what
was expected, the command that rewrites it), checked arrays and JSON, the CSV writer."""

from __future__ import annotations

import csv
import io
import shlex
import zipfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from dejavu.errors import RunFolderError
from dejavu.runs import load_npz, read_json, write_text

MODELS = ("A", "B")
# Query sets embedded as crops: the two attacked sets and the held-out control set.
CROP_SETS = ("A", "B", "T")
# The one-model test's reference: a correlation classifier, in models/classifier/.
CLASSIFIER = "classifier"


def models_of(config) -> tuple[str, ...]:
    """The embedding models of a run: both, or the target alone in the one-model test."""
    return ("A",) if config.model.one_model else MODELS


def query_sets_of(config) -> tuple[str, ...]:
    """The sets whose crops are embedded and searched: A, B, T; A and T in the one-model test (B's crops train
    the classifier there)."""
    return ("A", "T") if config.model.one_model else CROP_SETS


# What numpy raises on a truncated or overwritten archive, at opening or when a member is read.
NPZ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError)
KINDS = {"U": "strings", "iu": "integers", "f": "floats", "b": "booleans"}


# Refusals ----------------------------------------------------------------------------------------
def redo(root: Path, command: str) -> str:
    """The advice that rewrites an artifact of the run folder ``root``: its stage's command, then a run for
    the stages that read it."""
    out = shlex.quote(str(root))
    return f"re-run `dejavu {command} --out {out}` to rewrite it, then `dejavu run --out {out}`"


def refuse(path: Path, found: str, expected: str, advice: str) -> RunFolderError:
    """The error of an artifact that does not hold: file, what was found, what was expected, what to do."""
    return RunFolderError(f"artifact '{path}' {found}; expected {expected}: {advice}")


def examples(values: Iterable[Any], limit: int = 3) -> str:
    """A few offending values, quoted (``repr`` keeps an edited id with odd characters on one line)."""
    values = [str(v) for v in values]
    return ", ".join(repr(v) for v in values[:limit]) + (", ..." if len(values) > limit else "")


def count(number: int, noun: str) -> str:
    """``number`` and the phrase ``noun`` (plural first word), singular for one: ``count(1, "ids of A")``."""
    word, _, rest = noun.partition(" ")
    one = word[:-3] + "y" if word.endswith("ies") else word[:-1]
    return f"{number} {word if number != 1 else one}" + (f" {rest}" if rest else "")


def describe(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


# Arrays ------------------------------------------------------------------------------------------
def check_arrays(path: Path, arrays: dict[str, np.ndarray], spec: dict[str, tuple[tuple, str]], advice: str,
                 dims: dict[str, int] | None = None) -> dict[str, int]:
    """Each array of ``spec`` has its shape (ints fixed, names shared: ``("N", "k")``) and dtype kind;
    returns the sizes the names took (``dims`` presets some)."""
    dims = dict(dims or {})
    for name, (shape, kinds) in spec.items():
        array = arrays[name]
        fits = array.dtype.kind in kinds and array.ndim == len(shape)
        for want, got in zip(shape, array.shape):
            fits = fits and got == (dims.setdefault(want, got) if isinstance(want, str) else want)
        if not fits:
            words = ", ".join(f"{d}={dims[d]}" if d in dims else str(d) for d in shape)
            raise refuse(path, f"holds '{name}' of shape {array.shape} and dtype {array.dtype}",
                         f"shape ({words}) of {KINDS[kinds]}", advice)
    return dims


def read_npz(path: Path, required: Sequence[str], advice: str, optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays of an npz artifact holding exactly the ``required`` keys (and maybe the ``optional`` ones)."""
    if not path.is_file():
        raise RunFolderError(f"artifact '{path}' is missing: {advice}")
    try:
        arrays = load_npz(path)
    except (RunFolderError, *NPZ_ERRORS):
        # The file is there, so what failed is its content: name the command that rewrites it.
        raise refuse(path, "is damaged (truncated or not a numpy archive)", "the archive its stage writes",
                     advice) from None
    missing = [key for key in required if key not in arrays]
    unknown = [key for key in arrays if key not in required and key not in optional]
    if missing or unknown:
        found = f"lacks the array '{missing[0]}'" if missing else f"holds an unknown array '{unknown[0]}'"
        raise refuse(path, f"{found} (it holds {sorted(arrays)})", f"the arrays {list(required)}", advice)
    return arrays


def read_artifact_json(path: Path, advice: str) -> Any:
    """A JSON artifact; missing or not JSON, the error gives ``advice`` (deleting a file inside a stage's
    folder, like ``models/A/history.json``, would not make ``dejavu run`` recompute it)."""
    if not path.is_file():
        raise RunFolderError(f"artifact '{path}' is missing: {advice}")
    try:
        return read_json(path)
    except RunFolderError:
        raise refuse(path, "is not valid JSON", "the file its stage writes", advice) from None


def check_unique(path: Path, ids: np.ndarray, what: str, advice: str) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise refuse(path, f"lists {count(int((counts > 1).sum()), what)} more than once (e.g. "
                           f"{examples(values[counts > 1])})", f"each of the {what} once", advice)


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[object]], delimiter: str = ",") -> None:
    """A CSV artifact, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(columns)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
