"""Submit a ``dejavu`` command to SLURM through submitit (optional extra: ``pip install -e '.[slurm]'``).

One task per GPU; each task exports torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)
and runs the same command line, so a SLURM job trains exactly as ``torchrun`` would.
``executor="local"`` builds and runs the same job with submitit's local executor (no cluster), which
is how the tests check it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dejavu.errors import ConfigError


@dataclass
class SlurmRequest:
    partition: str = ""
    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int = 10
    time_min: int = 4320
    executor: str = "slurm"  # or "local"


class DistributedCommand:
    """The job's callable (pickled by submitit): set up the process's rank, then run ``entry(argv)``.

    ``entry`` is the command's ``main`` (``dejavu.cli.main``), passed in rather than imported so that
    launching sits below the CLI; it is pickled by reference."""

    def __init__(self, argv: list[str], entry: Callable[[list[str]], int]):
        self.argv = list(argv)
        self.entry = entry

    def __call__(self) -> int:
        import submitit  # optional extra, only inside a job

        os.environ["DEJAVU_IN_JOB"] = "1"  # the job must run the command, never submit it again
        environment = submitit.helpers.TorchDistributedEnvironment()
        if environment.world_size > 1:
            # One GPU per task by LOCAL_RANK (dejavu.distributed picks cuda:LOCAL_RANK itself).
            environment.export(set_cuda_visible_devices=False)
        code = self.entry(self.argv)
        if code:
            raise RuntimeError(f"dejavu {' '.join(self.argv)} exited with status {code}")
        return code

    def checkpoint(self):
        """On preemption or time-out submitit requeues the same command; training continues from its resume state."""
        import submitit  # optional extra, only inside a job

        argv = self.argv if "--resume" in self.argv else [*self.argv[:1], "--resume", *self.argv[1:]]
        return submitit.helpers.DelayedSubmission(DistributedCommand(argv, self.entry))


def submit(argv: list[str], request: SlurmRequest, folder: Path, entry: Callable[[list[str]], int]):
    """Submit ``entry(argv)`` (the ``dejavu`` command) as one job; returns the submitit Job
    (``job.job_id``, ``job.result()``)."""
    try:
        import submitit  # optional extra (pip install -e '.[slurm]')
    except ImportError:
        raise ConfigError("SLURM submission needs submitit: pip install -e '.[slurm]' (or pip install submitit)") from None
    if request.nodes < 1 or request.gpus_per_node < 1:
        raise ConfigError(f"--nodes and --gpus-per-node must be at least 1 (found {request.nodes}, {request.gpus_per_node})")
    if request.executor == "local" and request.nodes > 1:
        raise ConfigError("--slurm-executor local runs on this machine only: use --nodes 1")
    if request.executor == "slurm" and not request.partition:
        raise ConfigError("--slurm-partition is required to submit to SLURM (or --slurm-executor local to try it here)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if request.executor == "local":
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(timeout_min=request.time_min, tasks_per_node=request.gpus_per_node,
                                   nodes=1, name="dejavu")
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(
            name="dejavu", slurm_partition=request.partition, nodes=request.nodes,
            tasks_per_node=request.gpus_per_node, gpus_per_node=request.gpus_per_node,
            cpus_per_task=request.cpus_per_task, timeout_min=request.time_min,
            # One failed task ends the job, instead of the others waiting for it until the time limit.
            slurm_srun_args=["--kill-on-bad-exit=1"],
        )
    return executor.submit(DistributedCommand(argv, entry))
