"""Distributed training on CPU with gloo: the maths of gathering, the views, and torchrun end to end."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from dejavu.config import load_config
from dejavu.data.augment import ssl_view, to_float
from dejavu.losses.vicreg import vicreg_loss
from dejavu import distributed

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
SINGLE = [sys.executable, "-m", "dejavu"]


def test_views_of_a_part_are_the_rows_of_the_whole_batch():
    """Each process augments only its rows, yet gets exactly what one process makes for them."""
    augment = load_config().train.augment
    images = to_float(torch.randint(0, 256, (8, 24, 24, 3), dtype=torch.uint8))
    whole = ssl_view(images, 16, augment, torch.Generator().manual_seed(5))
    for start in (0, 4):
        part = ssl_view(images[start : start + 4], 16, augment, torch.Generator().manual_seed(5), part=(start, 8))
        assert torch.allclose(part, whole[start : start + 4], atol=1e-6)
    shifted = ssl_view(images[4:], 16, augment, torch.Generator().manual_seed(5))  # no part: other draws
    assert not torch.allclose(shifted, whole[4:], atol=1e-3)


def _gradient_worker(rank: int, init_file: str, inputs: torch.Tensor, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Linear(6, 5))
    rows = slice(rank * 4, (rank + 1) * 4)
    z_a = distributed.gather(model(inputs[0][rows]))
    z_b = distributed.gather(model(inputs[1][rows]))
    vicreg_loss(z_a, z_b).backward()
    # numpy, not tensors: tensors travel through shared memory that dies with this process.
    queue.put((rank, model.module.weight.grad.numpy().copy(), z_a.detach().numpy().copy()))
    dist.barrier()  # neither leaves while the other still talks to it
    dist.destroy_process_group()
    queue.close()
    queue.join_thread()  # the results are sent before the process ends
    # Skip interpreter teardown: gloo's threads can abort it under load ("terminate called without an
    # active exception"), after every result is already in; a failure above still exits non-zero.
    os._exit(0)


def test_gathered_loss_under_ddp_has_the_single_process_gradient(tmp_path):
    """Two processes with 4 rows each: the same global-batch embeddings and the same gradient as one process with 8."""
    inputs = torch.randn(2, 8, 6, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    single = nn.Linear(6, 5)
    vicreg_loss(single(inputs[0]), single(inputs[1])).backward()

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_gradient_worker, args=(rank, str(tmp_path / "init"), inputs, queue))
               for rank in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    for rank, grad, gathered in results:
        np.testing.assert_allclose(gathered, single(inputs[0]).detach().numpy(), atol=1e-6)
        np.testing.assert_allclose(grad, single.weight.grad.numpy(), atol=1e-5)


def _cli(command: list[str], out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    args = ["--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(out),
            "train.epochs=8", "train.warmup_epochs=0", "threads=1", *extra]
    return subprocess.run([*command, "train", "--model", "A", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
def test_two_gloo_processes_follow_the_one_process_loss_curve(tmp_path):
    """torchrun with 2 CPU processes and the same global batch trains like one process.

    The processes see the same global batches and views, gather embeddings for the loss and average
    gradients; what differs is BatchNorm, whose statistics are per process on CPU (torch's
    SyncBatchNorm needs GPUs). Stated tolerance: every epoch's mean loss within 2 % of one process's.
    """
    one = _cli(SINGLE, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _cli([*TORCHRUN, "-m", "dejavu"], tmp_path / "two")  # the README's command
    assert two.returncode == 0, two.stderr[-2000:]
    curves = {}
    for name in ("one", "two"):
        history = json.loads((tmp_path / name / "models" / "A" / "history.json").read_text())
        curves[name] = np.array(history["loss"])
        assert history["processes"] == (1 if name == "one" else 2)
    relative = np.abs(curves["two"] - curves["one"]) / np.abs(curves["one"])
    assert relative.max() < 0.02, (curves, relative)
    # The loss really moved, so agreeing is not trivial: 1 % per epoch would be a tighter curve than training gives.
    assert curves["one"][-1] < curves["one"][0] - 0.2
    assert (tmp_path / "two" / "models" / "A" / "model.safetensors").is_file()
    assert not (tmp_path / "two" / "models" / "A" / "resume.pt").exists()


@pytest.mark.slow
def test_a_global_batch_the_processes_cannot_split_is_refused(tmp_path):
    result = _cli([*TORCHRUN, "-m", "dejavu"], tmp_path / "odd", "train.batch_size=25")
    assert result.returncode != 0
    assert "train.batch_size' = 25 is not divisible by the 2 processes" in result.stderr
    assert not (tmp_path / "odd" / "data").exists(), "refused before any stage ran"


@pytest.mark.slow
def test_slurm_job_is_built_and_run_by_submitits_local_executor(tmp_path):
    """`dejavu train --slurm-executor local` builds the same job a cluster would get and runs it here."""
    result = _cli(SINGLE, tmp_path / "job", "--slurm-executor", "local",
                  "--gpus-per-node", "1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "submitted job" in result.stdout
    assert (tmp_path / "job" / "models" / "A" / "model.safetensors").is_file()
    assert list((tmp_path / "job.slurm").glob("*_submitted.pkl")), "submitit wrote no job files"


def test_slurm_submission_needs_a_partition(tmp_path, capsys):
    from dejavu.cli import main

    assert main(["train", "--out", str(tmp_path / "r"), "--gpus-per-node", "2", "--slurm-executor", "slurm"]) == 2
    assert "--slurm-partition is required" in capsys.readouterr().err


def test_slurm_options_are_checked_before_anything_is_queued(tmp_path, capsys, monkeypatch):
    from dejavu.cli import main

    out = str(tmp_path / "r")
    # A bad config is refused here, before anything is queued.
    assert main(["train", "--out", out, "train.method=mae", "--slurm-executor", "local"]) == 2
    assert "unknown value 'mae'" in capsys.readouterr().err
    # SLURM sizes without a SLURM target would silently run as one local process.
    assert main(["run", "--out", out, "--nodes", "2"]) == 2
    assert "--nodes only apply to a SLURM job" in capsys.readouterr().err
    assert main(["run", "--out", out, "--nodes", "2", "--slurm-executor", "local"]) == 2
    assert "--nodes 1" in capsys.readouterr().err
    # Abbreviations could slip past the job's rewriting, so they are not accepted.
    with pytest.raises(SystemExit):
        main(["run", "--out", out, "--slurm-part", "gpu"])
    # Inside a job, a command never submits another (no resubmission loop).
    monkeypatch.setenv("DEJAVU_IN_JOB", "1")
    assert main(["run", "--out", out, "--slurm-partition", "gpu"]) == 2
    assert "already runs inside a submitted dejavu job" in capsys.readouterr().err
    assert not (tmp_path / "r.slurm").exists() and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_sweep_under_torchrun_trains_each_shared_training_once_on_both_processes(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(f"config: {ROOT / 'configs' / 'smoke.yaml'}\n"
                     "overrides: [train.epochs=3, train.warmup_epochs=0, threads=1, metrics.bootstrap=50]\n"
                     "grid: {attack.layer: [backbone, projector]}\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*TORCHRUN, "-m", "dejavu", "sweep", "--config", str(study), "--out", str(tmp_path / "sweep")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("dejavu sweep:") == 1  # rank zero alone reports
    rows = (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("grid,backbone") and rows[2].startswith("grid,projector")
    first, second = (tmp_path / "sweep" / "points" / name for name in ("layer=backbone_seed=0", "layer=projector_seed=0"))
    assert json.loads((first / "models" / "A" / "history.json").read_text())["processes"] == 2
    marker = json.loads((second / "stages" / "train_A.done.json").read_text())
    assert marker["adopted_from"] == str(first)
    assert (second / "report.html").is_file()
