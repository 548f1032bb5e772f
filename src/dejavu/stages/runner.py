"""Running stages: skip what is done (by fingerprint), run the rest in order, record completions.

Each stage reads only earlier stages' artifacts from the run folder, writes its own atomically, and
records a fingerprint of its inputs; ``run_all`` skips a stage whose fingerprint matches, so a killed
run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import faiss
import torch

from dejavu.config import Config
from dejavu.cpus import usable_cpus
from dejavu.errors import ConfigError, ResourceError, os_error_message
from dejavu.runs import Run
from dejavu.stages.declaration import Stage, fingerprint
from dejavu.stages.outputs import changed_files, signature
from dejavu.stages.registry import STAGE_BY_NAME
from dejavu import distributed


def fingerprints(run: Run) -> dict[str, str]:
    """Each stage's fingerprint in ``run`` (see :func:`dejavu.stages.declaration.fingerprint`)."""
    return {name: fingerprint(stage, run) for name, stage in STAGE_BY_NAME.items()}


def stage_done(run: Run, stage: Stage, log: Callable[[str], None] | None = None) -> bool:
    """Whether ``stage`` is finished in ``run`` and current: its marker's fingerprint matches, its artifact
    exists, and none of the files it wrote changed since (``log`` says which did)."""
    if not run.is_done(stage.name, fingerprint(stage, run)):
        return False
    changed = changed_files(run, stage)
    if changed and log is not None:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        log(f"[{stage.name}] {shown} changed or vanished after the stage finished: computing it again")
    return not changed


def finished_stages_hold(run: Run) -> bool:
    """Whether every stage finished in ``run``'s folder is still up to date under ``run.config`` (so the
    folder may take that config without discarding anything it computed)."""
    return all(name in STAGE_BY_NAME and (not STAGE_BY_NAME[name].needed(run.config) or stage_done(run, STAGE_BY_NAME[name]))
               for name in run.finished_stages())


def set_threads(config: Config) -> None:
    """Size torch's and faiss's thread pools to the CPUs this process may use (``dejavu.cpus``), not the
    machine's count; ``threads`` > 0 chooses the count."""
    # Processes of a distributed CPU run share the cores (on GPUs they hardly use them, and rank zero runs
    # the other stages alone, so it keeps them all).
    per_node = 1 if torch.cuda.is_available() else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    usable = usable_cpus()
    if config.threads > usable:
        # More threads than cores only makes them wait for each other (and tens of thousands exhaust memory).
        raise ConfigError(
            f"config key 'threads' = {config.threads}: this process may use {usable} CPU{'s' if usable > 1 else ''}; "
            f"use 0 (all of them) or a count from 1 to {usable}"
        )
    threads = config.threads or max(1, usable // per_node)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    # No stage runs operators side by side (torch.jit.fork), so the inter-op pool needs no thread per
    # core; torch accepts the setting only before its first inter-op work, hence once per process.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def run_stage(run: Run, name: str, force: bool = False, log: Callable[[str], None] = print) -> Path | None:
    """Run one stage unless its fingerprint says it is already done (``force`` re-runs it).

    In a distributed run every process trains; the other stages run on rank zero while the rest
    wait (and fail with it if it fails). Rank zero decides what is done and alone writes markers.
    """
    stage = STAGE_BY_NAME[name]
    if not stage.needed(run.config):
        if distributed.is_main():
            log(f"[{name}] not needed by this run ({stage.unneeded}), skipped")
        return None
    print_ = fingerprint(stage, run)
    if not force and distributed.broadcast_flag(stage_done(run, stage, log if distributed.is_main() else None)):
        if distributed.is_main():
            log(f"[{name}] up to date, skipped")
        distributed.barrier()
        return None

    def work() -> Path:
        start = time.perf_counter()
        path = _guarded(name, run.root, lambda: stage.function(run))
        elapsed = time.perf_counter() - start
        if distributed.is_main():
            artifact = Path(path).resolve().relative_to(run.root.resolve())
            run.mark_done(name, print_, seconds=round(elapsed, 3), artifact=str(artifact),
                          files=signature(run.root, stage))
            log(f"[{name}] done in {elapsed:.1f} s -> {path}")
        return path

    path = work() if stage.every_process else distributed.on_rank_zero(work, f"stage {name}")
    distributed.barrier()
    return path


def _guarded(name: str, root: Path, compute: Callable[[], Path]) -> Path:
    """``compute()``, with the machine's limits (memory, disk, permissions) reported as one sentence that
    names the stage; the stage's earlier output and every finished stage stay as they were."""
    try:
        return compute()
    except (MemoryError, RuntimeError) as exc:
        # torch reports a failed allocation as a RuntimeError (CPU) or its OutOfMemoryError subclass (GPU).
        if isinstance(exc, RuntimeError) and not _out_of_memory(exc):
            raise
        raise ResourceError(
            f"stage '{name}' ran out of memory; lower what it holds at once (train.batch_size, attack.batch_size, "
            "data.image_size, data.workers) or free memory, then run the same command again (finished stages are kept)"
        ) from None
    except OSError as exc:
        if exc.errno is None and ("requested and" in str(exc) or _disk_full(root)):
            # numpy's writers report a short write ("N requested and M written") without the errno; the
            # half-written file is gone by now, so the disk may no longer look full.
            exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root))
        elif exc.filename is None and exc.errno is not None:  # a failed write names no file: name the folder
            exc = OSError(exc.errno, exc.strerror, str(root))
        raise ResourceError(f"stage '{name}': {os_error_message(exc)}") from None


def _out_of_memory(exc: RuntimeError) -> bool:
    text = str(exc)
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


def _disk_full(root: Path) -> bool:
    try:
        return shutil.disk_usage(root).free < 2 ** 20
    except OSError:
        return False


def run_all(run: Run, log: Callable[[str], None] = print) -> dict[str, float]:
    """Every stage in order; returns wall seconds per stage run now."""
    set_threads(run.config)
    times = {}
    for name in STAGE_BY_NAME:
        start = time.perf_counter()
        run_stage(run, name, log=log)
        times[name] = time.perf_counter() - start
    return times
