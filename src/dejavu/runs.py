"""Run folder: artifact paths, atomic writes, stage fingerprints, metadata.

A stage writes its artifacts through :func:`atomic_path` (temp file, then ``os.replace``) and,
last, a ``<stage>.done.json`` marker holding the fingerprint of what it was computed from.
A re-run skips a stage whose marker matches; a kill leaves no half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from dejavu.config import RESUMABLE_WITH_OTHER_VALUES, Config
from dejavu.errors import RunFolderError

_UMASK = os.umask(0)
os.umask(_UMASK)

@contextlib.contextmanager
def atomic_path(path: str | Path, set_mode: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    ``set_mode=False`` leaves the file's mode alone (a hard link put at the temporary path shares its
    inode, and so its mode, with the file it links).

    Example:
        >>> with atomic_path(run / "metrics.json") as tmp:
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if set_mode:
            # mkstemp creates 0600 files; artifacts (reports especially) get the usual umask permissions.
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"artifact '{path}' is missing: run the stage that writes it first")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"artifact '{path}' is missing: run the stage that writes it first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"artifact '{path}' is not valid JSON ({exc}); delete it to recompute") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def derive_seeds(seed: int, train_seed: int = -1) -> dict[str, int]:
    """Independent per-purpose seeds from the run's one seed (recorded in ``run.json``).

    ``train_seed`` (``train.seed``, -1: off) replaces the training's seed alone, so a training can be
    repeated over the same data and split."""
    names = ["data", "split", "train", "control_split", "bootstrap"]
    children = np.random.SeedSequence(seed).spawn(len(names))
    seeds = {name: int(child.generate_state(1)[0]) for name, child in zip(names, children)}
    if train_seed >= 0:
        seeds["train"] = derive_seeds(train_seed)["train"]
    return seeds


class Run:
    """A run folder. ``Run(out, config)`` claims ``out`` for ``config`` or refuses a foreign run."""

    def __init__(self, root: str | Path, config: Config):
        self.root = Path(root)
        self.config = config
        self.seeds = derive_seeds(config.seed, config.train.seed)

    # Paths -------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def neighbours_dir(self) -> Path:
        return self.root / "neighbours"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    # Claiming ------------------------------------------------------------------------------------
    def claim(self) -> None:
        """Create the folder or check it belongs to this config; write ``config.json``/``run.json``.

        Only keys that change results count: ``threads`` and ``data.workers`` may differ between resumptions.
        """
        config_path = self.root / "config.json"
        if self.root.exists() and not self.root.is_dir():
            raise RunFolderError(f"output '{self.root}' exists and is not a folder")
        if config_path.is_file():
            old = read_json(config_path)
            new = self.config.to_dict()
            diffs = config_diff(old, new)
            diffs = [d for d in diffs if d[0] not in RESUMABLE_WITH_OTHER_VALUES]
            # A key that a newer dejavu added, at its default value, changes nothing already computed.
            defaults = Config().to_dict()
            diffs = [d for d in diffs if not (d[1] is None and _lookup(defaults, d[0]) == d[2])]
            if diffs:
                key, was, now = diffs[0]
                older = " (written by an older dejavu without that key)" if was is None else ""
                raise RunFolderError(
                    f"output folder '{self.root}' holds a different run ({key} was {was!r}, now {now!r}){older}; "
                    "choose another --out, or delete the folder to start over"
                )
        elif self.root.is_dir() and any(self.root.iterdir()):
            raise RunFolderError(
                f"output folder '{self.root}' is not empty and holds no dejavu run (no config.json); "
                "choose an empty or new --out"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(config_path, self.config.to_dict())
        write_json(
            self.root / "run.json",
            {
                "seed": self.config.seed,
                "train_seed": self.config.train.seed,
                "derived_seeds": self.seeds,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "numpy": np.__version__,
                "machine": platform.machine(),
                "processor_count": os.cpu_count(),
            },
        )

    # Stage markers ------------------------------------------------------------------------------
    def marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.done.json"

    def _marker_payload(self, stage: str) -> dict[str, Any]:
        path = self.marker(stage)
        if not path.is_file():
            return {}
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}
        return payload if isinstance(payload, dict) else {}

    def is_done(self, stage: str, fingerprint: str) -> bool:
        """Done when the marker's fingerprint matches and the stage's artifact is still on disk."""
        payload = self._marker_payload(stage)
        artifact = payload.get("artifact")
        return payload.get("fingerprint") == fingerprint and bool(artifact) and (self.root / artifact).exists()

    def token(self, stage: str) -> str:
        """The random token of the stage's last completed run ("missing" if it never completed)."""
        return str(self._marker_payload(stage).get("token", "missing"))

    def mark_done(self, stage: str, fingerprint: str, **info: Any) -> None:
        # A fresh token per completion: stages that read this one see their fingerprints change.
        write_json(self.marker(stage), {"fingerprint": fingerprint, "token": uuid.uuid4().hex, **info})


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def config_diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs between two config trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += config_diff(old.get(key), new.get(key), f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
        return out
    return [] if old == new else [(prefix, old, new)]
