import os

import pytest
import torch

# Tests are small; two threads is what CI has, and fixed threads keep results reproducible.
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = [
    "data.images_per_class=40", "data.image_size=32", "data.input_size=16",
    "split.a_per_class=8", "split.b_per_class=8", "split.x_per_class=16", "split.t_per_class=8",
    "crop.min_side_px=4", "attack.k=5", "train.epochs=2", "train.batch_size=16",
    "train.projector=32-32", "train.widths=[4,8]", "metrics.bootstrap=50", "train.warmup_epochs=0",
]


# Exit codes of `dejavu run` / `audit` that ran to the end: a verdict either way (0), no verdict (3: tiny runs
# often have too small a control) or an inconclusive result (4) (dejavu.metrics.outcomes.EXIT_CODES). Tests of
# the outcome itself assert the decision.
FINISHED = (0, 3, 4)


def run_to_the_end(argv: list[str], **kwargs):
    """``subprocess.run(argv)`` captured, asserting the command finished (:data:`FINISHED`)."""
    import subprocess

    process = subprocess.run(argv, capture_output=True, **kwargs)
    assert process.returncode in FINISHED, process.stderr[-2000:]
    return process


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Config overrides for a run that takes seconds (every stage, tiny sizes)."""
    return list(TINY)


def pytest_sessionfinish(session, exitstatus):
    """No test may be silently skipped: a skip fails the run (CI must see every test execute)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        reporter.write_line(f"FAILED: {len(skipped)} test(s) were skipped; every test must run", red=True)
        session.exitstatus = 1


def run_straight_and_killed(command: list[str], args: list[str], root):
    """Run ``command --out root/straight args`` to the end, and the same into ``root/killed`` SIGKILLed as
    soon as model A's resume state exists. Returns (straight, killed) run folders."""
    import signal
    import subprocess
    import time

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight, killed = root / "straight", root / "killed"
    run_to_the_end([*command, "--out", str(straight), *args], env=env)
    process = subprocess.Popen([*command, "--out", str(killed), *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)
    resume = killed / "models" / "A" / "resume.pt"
    deadline = time.monotonic() + 120
    while not resume.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert resume.exists(), "training never wrote a resume state"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "models" / "A" / "model.safetensors").exists()
    return straight, killed


def resign(root) -> None:
    """Record the files now in a run folder as those its stages wrote (each marker's signature taken anew).

    A changed artifact makes its stage run again (``dejavu.stages.outputs``). Tests of what happens when a
    stage *reads* a bad artifact, or of a model whose weights were changed on purpose, re-sign after the
    change: as if the file had been written that way (or edited keeping its size and time)."""
    import json
    from pathlib import Path

    from dejavu.stages import STAGE_BY_NAME
    from dejavu.stages.outputs import signature

    for marker in sorted((Path(root) / "stages").glob("*.done.json")):
        payload = json.loads(marker.read_text())
        payload["files"] = signature(Path(root), STAGE_BY_NAME[marker.name.removesuffix(".done.json")])
        marker.write_text(json.dumps(payload))


def train_straight_and_interrupted(monkeypatch, root, **args):
    """``dejavu.train.loop.train_encoder(**args)`` into ``root/straight``, and into ``root/killed`` interrupted
    inside its third epoch (a KeyboardInterrupt, after the resume state of epoch 2 was written) then resumed.
    Returns (straight, killed) output folders. ``args`` must set ``train.resume_every_s=0`` in their config."""
    import pytest
    import torch

    from dejavu.train import loop

    straight, killed = root / "straight", root / "killed"
    loop.train_encoder(out_dir=straight, **args)
    real = loop.train_one_epoch

    def dies_in_epoch_3(state, epoch, *rest):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(state, epoch, *rest)

    monkeypatch.setattr(loop, "train_one_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        loop.train_encoder(out_dir=killed, **args)
    assert torch.load(killed / "resume.pt", weights_only=True)["epoch"] == 2
    monkeypatch.setattr(loop, "train_one_epoch", real)
    loop.train_encoder(out_dir=killed, **args)
    return straight, killed
