"""The run folder under kills, races and tampering (issue 12, items 2, 4, 5 and 6): one process at a time,
nothing a kill leaves behind bricks the folder, every piece of advice works, tampered checkpoints are
refused in one line. Kills and races use real processes."""

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dejavu.cli import main
from tests.conftest import FINISHED, TINY, resign

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
ARGS = ["--config", SMOKE, "threads=1", *TINY]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _cli(*args):
    return [sys.executable, "-m", "dejavu.cli", *args]


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("dejavu") and "error" in line]
    assert "Traceback" not in stderr and len(lines) == 1, stderr[-2000:]
    return lines[0]


def _refused(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    return _one_error_line(err)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A whole tiny run, finished (copied by the tests that change it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", "--out", str(out), *ARGS]) in FINISHED
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


# Races: one process per folder ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("second", [[], ["attack.k=3"]], ids=["same-config", "other-config"])
def test_two_processes_on_one_folder_one_is_refused_in_one_line(second, tmp_path):
    """Started together: one runs, the other stops at once naming the holder; the folder's results are
    those of the config that ran (a k=3 run never prints the k=5 numbers, nor the other way round)."""
    out = tmp_path / "run"
    processes = [subprocess.Popen(_cli("run", "--out", str(out), *ARGS, *extra), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT) for extra in ([], second)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [r[2][-1500:] for r in results]
    winner = next(i for i, (code, _, _) in enumerate(results) if code in FINISHED)
    line = _one_error_line(results[1 - winner][2])
    assert f"run folder '{out}' is in use by dejavu process " in line and "choose another --out" in line
    k = 3 if second and winner == 1 else 5
    neighbours = dict(__import__("numpy").load(out / "neighbours" / "model_A" / "crops_A.npz"))
    assert neighbours["neighbour_labels"].shape[1] == k
    assert f'"k": {k}' in (out / "config.json").read_text()


@pytest.mark.slow
def test_a_killed_holder_leaves_no_lock_and_the_next_run_resumes(tmp_path):
    out = tmp_path / "run"
    args = [*ARGS, "train.epochs=30", "train.resume_every_s=0"]
    process = subprocess.Popen(_cli("run", "--out", str(out), *args), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
    resume = out / "models" / "A" / "resume.pt"
    deadline = time.monotonic() + 120
    while not resume.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (out / ".dejavu.lock").is_file()  # the file stays; the kernel dropped the lock with the process
    result = subprocess.run(_cli("run", "--out", str(out), *args), capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert result.returncode in FINISHED, result.stderr[-2000:]
    assert "[data] up to date, skipped" in result.stdout


# Kills at the worst moments -------------------------------------------------------------------------
def _killed_when(out: Path, patch: str, extra=()):
    """Run `dejavu run` in a real process whose ``patch`` (Python, with ``kill()`` at hand) SIGKILLs it."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        def kill(*_, **__):
            os.kill(os.getpid(), signal.SIGKILL)
        {patch}
        from dejavu.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    result = subprocess.run([sys.executable, "-c", script, "run", "--out", str(out), *ARGS, *extra],
                            capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


@pytest.mark.slow
def test_a_kill_during_the_first_config_write_leaves_a_folder_that_still_runs(tmp_path, capsys):
    out = tmp_path / "run"
    _killed_when(out, textwrap.dedent("""
        import dejavu.runs as runs
        real = runs.os.replace
        runs.os.replace = lambda src, dst: kill() if str(dst).endswith("config.json") else real(src, dst)
    """).replace("\n", "\n        "))
    left = sorted(p.name for p in out.iterdir())
    assert any(n.startswith(".config.json.") and n.endswith(".tmp") for n in left) and "config.json" not in left
    # Another config, then the first: both accepted (nothing had finished), and the temporary is gone.
    assert main(["run", "--out", str(out), *ARGS, "attack.k=3"]) in FINISHED
    assert not [p for p in out.rglob("*.tmp")]


@pytest.mark.slow
def test_a_kill_while_writing_the_resume_state_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "run"
    _killed_when(out, "import dejavu.train.checkpoints as c; c.torch.save = kill",
                 ["train.epochs=4", "train.resume_every_s=0"])
    leftovers = list((out / "models" / "A").glob(".resume.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 0
    result = subprocess.run(_cli("run", "--out", str(out), *ARGS, "train.epochs=4", "train.resume_every_s=0"),
                            capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert result.returncode in FINISHED, result.stderr[-2000:]
    assert not list(out.rglob("*.tmp"))


def test_a_lost_config_json_is_replaced_and_the_finished_stages_are_kept(finished, tmp_path, capsys):
    """The advice for a damaged config.json ("delete that one file") works: nothing finished is lost."""
    run = _copy(finished, tmp_path)
    (run / "config.json").write_text("{not json")
    line = _refused(capsys, ["run", "--out", str(run), *ARGS])
    assert f"'{run / 'config.json'}' is damaged (not JSON); delete that one file and run again" in line
    (run / "config.json").unlink()
    assert main(["run", "--out", str(run), *ARGS]) in FINISHED
    captured = capsys.readouterr()
    assert "was missing; this run's config takes its place" in captured.err
    assert "[train_A] up to date, skipped" in captured.out and "[report] up to date, skipped" in captured.out


@pytest.mark.slow
def test_a_diverged_training_stops_and_a_lower_rate_reuses_the_data_stages(tmp_path, capsys):
    out = tmp_path / "run"
    line = _refused(capsys, ["run", "--out", str(out), *ARGS, "train.lr=1e30"])
    assert re.search(r"train A \(target\): the training diverged \(mean loss (nan|-?inf) in epoch \d+\)", line), line
    assert "lower train.lr (now 1e+30)" in line
    # The advice, as given: the same folder with the lower rate; data, split and crops are kept.
    assert main(["run", "--out", str(out), "train.lr=1e-4"]) in FINISHED
    captured = capsys.readouterr()
    assert "[crops] up to date, skipped" in captured.out and "(train.lr was 1e+30, now 0.0001)" in captured.err
    assert main(["run", "--out", str(out), "train.lr=1e-3"]) == 2  # now a model finished: another run
    assert "holds a different run (train.lr was 0.0001, now 0.001)" in capsys.readouterr().err


# Tampered checkpoints -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped after 2 of model A's 4 epochs, with its resume state."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    script = textwrap.dedent("""
        import sys
        import dejavu.train.loop as loop
        real = loop.save_epoch
        def save_epoch(state, done, config, out_dir):
            real(state, done, config, out_dir)
            if done == 2:
                raise KeyboardInterrupt
        loop.save_epoch = save_epoch
        from dejavu.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    result = subprocess.run([sys.executable, "-c", script, "run", "--out", str(out), *ARGS, "train.epochs=4",
                             "train.resume_every_s=0"], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert result.returncode == 130, result.stderr[-2000:]
    assert (out / "models" / "A" / "resume.pt").is_file()
    return out


def _tamper_meta(state):
    state["meta"] = "{not json"


def _tamper_shape(state):
    key = next(k for k, v in state["method"].items() if v.ndim == 2)
    state["method"][key] = torch.zeros(3, 3)


def _tamper_optimizer(state):
    del state["optimizer"]


def _tamper_generator(state):
    state["generator"] = torch.zeros(5, dtype=torch.uint8)


def _tamper_epoch_huge(state):
    state["epoch"] = 10 ** 9


def _tamper_epoch_negative(state):
    state["epoch"] = -5


def _tamper_pickle(state):
    import argparse

    state["extra"] = argparse.Namespace(command="rm -rf /")


@pytest.mark.parametrize("tamper, expected", [
    (_tamper_meta, "has damaged metadata (not a JSON object); delete it to train this model from the start"),
    (_tamper_shape, "its 'method' state does not fit this training"),
    (_tamper_optimizer, "it has no 'optimizer' state"),
    (_tamper_generator, "its 'generator' state does not fit this training"),
    (_tamper_epoch_huge, "its epoch is 1000000000, expected a whole number from 1 to 3"),
    (_tamper_epoch_negative, "its epoch is -5, expected a whole number from 1 to 3"),
    (_tamper_pickle, "holds Python objects that dejavu never writes, so it is not loaded (loading it could run "
                     "code); delete it to train this model from the start"),
])
def test_a_tampered_resume_state_is_refused_in_one_line_and_deleting_it_works(tamper, expected, interrupted,
                                                                             tmp_path, capsys):
    run = _copy(interrupted, tmp_path)
    resume = run / "models" / "A" / "resume.pt"
    state = torch.load(resume, weights_only=True)
    tamper(state)
    torch.save(state, resume)
    line = _refused(capsys, ["run", "--out", str(run), *ARGS, "train.epochs=4", "train.resume_every_s=0"])
    assert f"resume state '{resume}'" in line and expected in line
    assert "weights_only" not in line  # never torch's advice to load unsafely
    if tamper is _tamper_pickle:  # the advice works (once is enough: each run takes seconds)
        resume.unlink()
        assert main(["run", "--out", str(run), *ARGS, "train.epochs=4", "train.resume_every_s=0"]) in FINISHED


def _rewrite_weights(path: Path, change) -> None:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata=metadata)
    resign(path.parents[2])  # weights written so by their training (else the changed file is trained again)


def test_weights_stored_as_integers_or_with_nan_are_refused(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    weights = run / "models" / "B" / "model.safetensors"
    first = next(key for key, value in load_file(str(weights)).items() if value.is_floating_point())
    _rewrite_weights(weights, lambda state: state.update({first: state[first].to(torch.int32)}))
    line = _refused(capsys, ["embed", "--out", str(run)])
    assert f"checkpoint '{weights}': '{first}' is stored as torch.int32, not as floating-point weights" in line
    _rewrite_weights(weights, lambda state: state.update({first: torch.full_like(state[first].float(), float("nan"))}))
    line = _refused(capsys, ["embed", "--out", str(run)])
    assert f"'{first}' holds" in line and "non-finite value" in line


def test_weights_stored_in_half_precision_are_loaded_with_a_warning(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    weights = run / "models" / "A" / "model.safetensors"
    _rewrite_weights(weights, lambda state: state.update(
        {key: value.half() for key, value in state.items() if value.is_floating_point()}))
    assert main(["embed", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("dejavu: warning:")]
    assert len(warnings) == 1 and "tensors of lower precision are cast up" in warnings[0]
