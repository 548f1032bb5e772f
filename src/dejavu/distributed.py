"""Processes of a distributed run: torchrun's variables, rank zero, gathering with gradient.

Launching reads only what torchrun (or submitit's export) sets: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT. Without them everything here is the single-process identity.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from dejavu.errors import ConfigError, DejavuError

WAIT_HOURS = 12  # how long the other processes wait for a stage of rank zero's


def launched() -> bool:
    """True when this process was started by torchrun (or an equivalent) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


_WAITING_GROUP = None


def init() -> None:
    """Join the process group once: NCCL when this process has a GPU, gloo on CPU.

    Training collectives keep torch's default timeout, so a hang shows within minutes. Waiting for
    rank zero's stages (decoding ImageNet can take hours) goes through a separate gloo group with a
    12-hour timeout.
    """
    global _WAITING_GROUP
    if not launched() or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device())
    dist.init_process_group(backend=backend)
    _WAITING_GROUP = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=WAIT_HOURS))


def shutdown(clean: bool = True) -> None:
    """Leave the process group; after a failure just leave it to the exit (a barrier would wait forever)."""
    global _WAITING_GROUP
    if active() and clean:
        barrier()  # no process closes its connections while another still uses them
        dist.destroy_process_group()
    _WAITING_GROUP = None


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every process (through the long-timeout group: others may wait for rank zero's stages)."""
    if active():
        dist.barrier(group=_WAITING_GROUP)


def device() -> torch.device:
    """This process's GPU (by LOCAL_RANK, modulo the GPUs it can see: a cluster may show each task only
    its own), or the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank() % torch.cuda.device_count())


def broadcast_flag(value: bool) -> bool:
    """Rank zero's decision (e.g. "this stage is done", "save the resume state now"), on every process."""
    if not active():
        return value
    flag = torch.tensor([int(value)])
    dist.broadcast(flag, src=0, group=_WAITING_GROUP)
    return bool(flag.item())


def on_rank_zero(work, what: str):
    """Run ``work()`` on rank zero only; the others wait, and fail too if it failed (rather than wait forever)."""
    result = None
    if is_main():
        try:
            result = work()
        except BaseException:
            broadcast_flag(True)
            raise
    if broadcast_flag(False):
        raise DejavuError(f"rank 0 failed during {what}; see its error")
    return result


class _GatherWithGradient(torch.autograd.Function):
    # torch.distributed.nn's all_gather does the same but is deprecated; this is the usual 10 lines.
    @staticmethod
    def forward(ctx, z):
        parts = [torch.empty_like(z) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, z.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)  # never reduce into autograd's own buffer
        dist.all_reduce(grad)  # every process's loss depends on these rows: sum their gradients
        rows = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * rows : (dist.get_rank() + 1) * rows]


def gather(z: torch.Tensor) -> torch.Tensor:
    """All processes' batches concatenated in rank order, with gradient flowing back to each.

    Batch-statistic losses (VICReg's variance and covariance, SimCLR's negatives, Barlow Twins'
    correlation) then see the global batch, as one process would. The backward pass sums every
    process's gradient for this process's rows; with DDP's averaging that is the single-process
    gradient.
    """
    if not active():
        return z
    return _GatherWithGradient.apply(z)


def local_batch(global_batch: int) -> int:
    """This process's share of the global batch; refuses a batch the processes cannot split evenly."""
    world = world_size()
    if global_batch % world:
        raise ConfigError(
            f"config key 'train.batch_size' = {global_batch} is not divisible by the {world} processes of this "
            f"distributed run: use a multiple of {world} (e.g. {global_batch // world * world or world})"
        )
    return global_batch // world


def mean_over_processes(value: torch.Tensor) -> float:
    """The mean of a scalar over all processes (per-process losses of per-sample methods differ)."""
    if not active():
        return float(value)
    value = value.detach().clone().to(device() if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value)
    return float(value) / world_size()
