"""Run folder: artifact paths, atomic writes, stage fingerprints, metadata.

A stage writes its artifacts through :func:`atomic_path` (temp file, then ``os.replace``) and,
last, a ``<stage>.done.json`` marker holding the fingerprint of what it was computed from.
A re-run skips a stage whose marker matches; a kill leaves no half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import platform
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from dejavu.config import RESUMABLE_WITH_OTHER_VALUES, Config
from dejavu.cpus import usable_cpus
from dejavu.errors import RunFolderError

_UMASK = os.umask(0)
os.umask(_UMASK)
TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".dejavu.lock"

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
    # The writer's pid is in the name, so that a later process can tell a dead writer's leftover.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=TEMP_SUFFIX, dir=path.parent)
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
    """The arrays of an ``.npz`` artifact; a missing, truncated or foreign file is a RunFolderError naming it
    (nothing in it can execute code: object arrays are refused)."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"artifact '{path}' is missing: run the stage that writes it first")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise RunFolderError(
            f"artifact '{path}' is damaged or not a numpy archive ({_one_line(exc)}); {recompute_advice(path)}"
        ) from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"artifact '{path}' is missing: run the stage that writes it first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"artifact '{path}' is not valid JSON ({_one_line(exc)}); {recompute_advice(path)}") from None


def recompute_advice(path: str | Path) -> str:
    """How to get a damaged artifact recomputed: delete what its stage's marker points at (the file itself,
    or the stage's folder: ``embeddings``, ``models/A``, ``data``), then run again.

    A stage counts as done while its marker's artifact exists, so deleting one file inside a stage's
    folder would change nothing; the markers say which artifact holds the file."""
    path = Path(path).absolute()
    root = next((parent for parent in path.parents if (parent / "stages").is_dir()), None)
    if root is None:
        return "delete it and run again"
    relative = path.relative_to(root).as_posix()
    owners = []
    for marker in (root / "stages").glob("*.done.json"):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            artifact = str(json.loads(marker.read_text(encoding="utf-8")).get("artifact") or "")
            if artifact and (relative == artifact or relative.startswith(artifact.rstrip("/") + "/")):
                owners.append(artifact)
    target = max(owners, key=len) if owners else relative
    what = "it" if target == relative else f"'{root / target}'"
    return f"delete {what} and run `dejavu run --out {root}` again to recompute it"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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
    names = ["data", "split", "train", "control_split", "bootstrap", "correlation", "reconstruct"]  # (spawned children do not depend on the count)
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
    def finished_stages(self) -> list[str]:
        """The stages with a completion marker in this folder (adopted ones included)."""
        return sorted(p.name.removesuffix(".done.json") for p in (self.root / "stages").glob("*.done.json"))

    def claim(self, log: Any = None, still_valid: Any = None) -> None:
        """Create the folder or check it belongs to this config; write ``config.json``/``run.json``.

        Only keys that change results count: ``threads`` and ``data.workers`` may differ between resumptions.
        A folder where no stage finished takes a new config (a failed first try cost nothing to keep), as
        does a run folder whose ``config.json`` was lost (every stage's fingerprint still decides what is
        reused), and, when ``still_valid()`` (a callable) says every finished stage's fingerprint holds
        under the new config, a folder whose finished stages the change does not touch (a diverged training
        retried with a lower learning rate keeps its data stages). Temporary files of writers that died are
        removed when this process holds the folder's lock.
        """
        say = log or (lambda message: print(message, file=sys.stderr))
        config_path = self.root / "config.json"
        if self.root.exists() and not self.root.is_dir():
            raise RunFolderError(f"output '{self.root}' exists and is not a folder; choose another --out")
        if holds_lock(self.root):
            remove_stale_temporaries(self.root)
        finished = self.finished_stages() if self.root.is_dir() else []
        if config_path.is_file():
            try:
                old = read_json(config_path)
            except RunFolderError:
                if finished:
                    raise RunFolderError(
                        f"'{config_path}' is damaged (not JSON); delete that one file and run again: the stages "
                        "finished in this folder are kept when their inputs are unchanged"
                    ) from None
                old = self.config.to_dict()  # nothing finished: the damaged file is simply replaced
            if not isinstance(old, dict):
                raise RunFolderError(f"'{config_path}' is not a dejavu config; delete that one file and run again")
            new = self.config.to_dict()
            diffs = config_diff(old, new)
            diffs = [d for d in diffs if d[0] not in RESUMABLE_WITH_OTHER_VALUES]
            # A key that a newer dejavu added, at its default value, changes nothing already computed.
            defaults = Config().to_dict()
            diffs = [d for d in diffs if not (d[1] is None and _lookup(defaults, d[0]) == d[2])]
            if diffs and finished and not (still_valid is not None and still_valid()):
                key, was, now = diffs[0]
                older = " (written by an older dejavu without that key)" if was is None else ""
                raise RunFolderError(
                    f"output folder '{self.root}' holds a different run ({key} was {was!r}, now {now!r}){older}; "
                    "choose another --out, or delete the folder to start over"
                )
            if diffs:
                key, was, now = diffs[0]
                kept = f"the stages it finished ({', '.join(finished)}) hold under this one and are kept" if finished \
                    else "no stage had finished"
                say(f"dejavu: '{self.root}' held another config ({key} was {was!r}, now {now!r}); {kept}")
        elif finished or (self.root / "run.json").is_file():
            say(f"dejavu: '{config_path}' was missing; this run's config takes its place (finished stages are "
                "kept where their inputs are unchanged)")
        elif self.root.is_dir() and any(not _ours(p) for p in self.root.iterdir()):
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
                # Thread count can change the last bits of a float sum, and with them a vote: what
                # threads=0 meant here is kept beside the machine's count.
                "usable_cpus": usable_cpus(),
                # How idle OpenMP threads waited (dejavu/__init__.py): speed only, never a number.
                "openmp_waiting": {key: os.environ[key] for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                                   if key in os.environ},
            },
        )

    # Stage markers ------------------------------------------------------------------------------
    def marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.done.json"

    def marker_payload(self, stage: str) -> dict[str, Any]:
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
        payload = self.marker_payload(stage)
        artifact = payload.get("artifact")
        return payload.get("fingerprint") == fingerprint and bool(artifact) and (self.root / artifact).exists()

    def token(self, stage: str) -> str:
        """The random token of the stage's last completed run ("missing" if it never completed)."""
        return str(self.marker_payload(stage).get("token", "missing"))

    def mark_done(self, stage: str, fingerprint: str, **info: Any) -> None:
        # A fresh token per completion: stages that read this one see their fingerprints change.
        write_json(self.marker(stage), {"fingerprint": fingerprint, "token": uuid.uuid4().hex, **info})


def _ours(path: Path) -> bool:
    """The folder lock and temporary files: what a claim that died before ``config.json`` leaves."""
    return path.name == LOCK_NAME or (path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX))


def _writer_pid(path: Path) -> int | None:
    """The pid in an :func:`atomic_path` temporary's name (``.<name>.<pid>-<random>.tmp``), if any."""
    stem = path.name[: -len(TEMP_SUFFIX)]
    for part in stem.split("."):
        head = part.split("-", 1)[0]
        if "-" in part and head.isdigit():
            return int(head)
    return None


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete the temporary files under ``root`` that no live writer owns; returns them.

    Called with the folder's lock held, so no other dejavu process writes here: a temporary of another
    pid is a leftover of a killed writer (a 0-byte ``.resume.pt.*.tmp``, a half-written config)."""
    removed = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") and name.endswith(TEMP_SUFFIX) and name != LOCK_NAME:
                if _writer_pid(path) != os.getpid():
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
    return removed


# Folder locks ------------------------------------------------------------------------------------
# path -> (open lock file, how many holders in this process): a process re-entering a folder it holds
# (a sweep locks its folder, then each point) must not block on itself.
_LOCKS: dict[str, list[Any]] = {}


def holds_lock(root: str | Path) -> bool:
    """Whether this process holds ``root``'s folder lock."""
    return str(Path(root).resolve()) in _LOCKS


@contextlib.contextmanager
def folder_lock(root: str | Path, command: str = "dejavu") -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``root`` (created if missing) for the block.

    The lock is ``fcntl.flock`` on ``root/.dejavu.lock``: the kernel releases it when the holder exits,
    however it dies, so a killed run never leaves a stale lock. A second process is refused at once with
    a RunFolderError naming the holder (pid, command, start time) instead of computing every stage again
    beside it.

    Example:
        >>> with folder_lock("runs/demo", "dejavu run"):
        ...     run.claim()
    """
    root = Path(root)
    key = str(root.resolve())
    if key in _LOCKS:
        _LOCKS[key][1] += 1
        try:
            yield
        finally:
            _LOCKS[key][1] -= 1
        return
    if root.exists() and not root.is_dir():
        raise RunFolderError(f"output '{root}' exists and is not a folder; choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / LOCK_NAME, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        # The holder writes its name just after taking the lock: a process refused in that instant
        # waits a moment for it rather than naming no one.
        holder = ""
        for _ in range(40):
            handle.seek(0)
            holder = handle.read().strip()
            if holder:
                break
            time.sleep(0.025)
        holder = holder or "another process"
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunFolderError(
                f"run folder '{root}' is in use by {holder}; wait for it to finish, or choose another --out"
            ) from None
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"dejavu process {os.getpid()} ({command}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
    handle.flush()
    _LOCKS[key] = [handle, 1]
    try:
        yield
    finally:
        _LOCKS[key][1] -= 1
        if _LOCKS[key][1] == 0:
            del _LOCKS[key]
            handle.close()  # closing releases the flock


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
