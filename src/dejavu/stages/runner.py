"""Running stages: skip what is done (by fingerprint), run the rest in order, record completions.

Each stage reads only earlier stages' artifacts from the run folder, writes its own atomically, and
records a fingerprint of its inputs; ``run_all`` skips a stage whose fingerprint matches, so a killed
run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import faiss
import torch

from dejavu.config import Config
from dejavu.runs import Run
from dejavu.stages.declaration import fingerprint
from dejavu.stages.registry import STAGE_BY_NAME
from dejavu import distributed


def fingerprints(run: Run) -> dict[str, str]:
    """Each stage's fingerprint in ``run`` (see :func:`dejavu.stages.declaration.fingerprint`)."""
    return {name: fingerprint(stage, run) for name, stage in STAGE_BY_NAME.items()}


def set_threads(config: Config) -> None:
    # Processes of a distributed CPU run share the cores (on GPUs they hardly use them, and rank zero runs
    # the other stages alone, so it keeps them all).
    per_node = 1 if torch.cuda.is_available() else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = config.threads or max(1, (os.cpu_count() or 1) // per_node)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def run_stage(run: Run, name: str, force: bool = False, log: Callable[[str], None] = print) -> Path | None:
    """Run one stage unless its fingerprint says it is already done (``force`` re-runs it).

    In a distributed run every process trains; the other stages run on rank zero while the rest
    wait (and fail with it if it fails). Rank zero decides what is done and alone writes markers.
    """
    stage = STAGE_BY_NAME[name]
    print_ = fingerprint(stage, run)
    if not force and distributed.broadcast_flag(run.is_done(name, print_)):
        if distributed.is_main():
            log(f"[{name}] up to date, skipped")
        distributed.barrier()
        return None

    def work() -> Path:
        start = time.perf_counter()
        path = stage.function(run)
        elapsed = time.perf_counter() - start
        if distributed.is_main():
            artifact = Path(path).resolve().relative_to(run.root.resolve())
            run.mark_done(name, print_, seconds=round(elapsed, 3), artifact=str(artifact))
            log(f"[{name}] done in {elapsed:.1f} s -> {path}")
        return path

    path = work() if stage.every_process else distributed.on_rank_zero(work, f"stage {name}")
    distributed.barrier()
    return path


def run_all(run: Run, log: Callable[[str], None] = print) -> dict[str, float]:
    """Every stage in order; returns wall seconds per stage run now."""
    set_threads(run.config)
    times = {}
    for name in STAGE_BY_NAME:
        start = time.perf_counter()
        run_stage(run, name, log=log)
        times[name] = time.perf_counter() - start
    return times
