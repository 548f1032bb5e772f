"""Bad input on the command line: one line on stderr, exit code 2, no traceback, and the run folder still
runs once the input is fixed (issue 12, items 5 and 7, and the fuzz test of its "Done when").

Every input is given to the real CLI (``dejavu.cli.main``, in this process, or ``python -m dejavu.cli`` where
the process matters)."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dejavu.cli import main
from dejavu.config import Config
from dejavu.config.checks import field_types, literal_choices
from tests.conftest import FINISHED, TINY

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _refused(capsys, argv):
    """Run the CLI; assert it refused with one line; return that line."""
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, (argv, captured.out[-500:], captured.err[-1500:])
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1 and lines[0].startswith("dejavu: error: "), lines
    return lines[0]


def _leaves(cls=Config, prefix=""):
    """(dotted key, type) of every leaf of the config."""
    for item in dataclasses.fields(cls):
        kind = field_types(cls)[item.name]
        if dataclasses.is_dataclass(kind):
            yield from _leaves(kind, f"{prefix}{item.name}.")
        else:
            yield f"{prefix}{item.name}", kind


LEAVES = list(_leaves())

# Values no key of the given type accepts, as they would be typed after `KEY=` (parsed as YAML).
NOT_A_NUMBER = ["abc", "[1, 2]", "{a: 1}", "true", "'12'x", ".nan", ".inf", "-.inf", "1e999"]
BAD_BY_TYPE = {
    int: ["abc", "1.5", "[1]", "{a: 1}", "true", "99999999999999999999999", "-99999999999999999999999", "1e3.5"],
    float: NOT_A_NUMBER,
    bool: ["maybe", "2", "[true]", "{a: 1}"],
    str: ["[1, 2]", "{a: 1}", "5", "true"],
    list: ["5", "word", "{a: 1}", "[[1], 2]", "['x', {b: 2}]"],
}
MALFORMED = ["[8,16", "{a: 1", "!!python/name:os.system", "!!python/object/apply:os.system ['true']",
             "'unterminated", "a: b: c", "- x\n- : y"]


def _bad_value(kind, draw):
    valid = literal_choices(kind)
    if valid is not None:
        return draw(st.sampled_from(["no_such_choice", "123456", "[x]", *MALFORMED]))
    base = typing.get_origin(kind) or kind
    return draw(st.sampled_from(BAD_BY_TYPE[base] + MALFORMED))


@st.composite
def bad_overrides(draw):
    """One override that no config accepts: a known key with a value of the wrong kind, a malformed YAML
    value, an unknown key, or no '='."""
    shape = draw(st.sampled_from(["value", "value", "value", "unknown", "no_equals", "empty_key"]))
    if shape == "unknown":
        key, _ = draw(st.sampled_from(LEAVES))
        return f"{key}.nosuchkey=1" if draw(st.booleans()) else f"{key}x=1"
    if shape == "no_equals":
        return draw(st.sampled_from([key for key, _ in LEAVES]))
    if shape == "empty_key":
        return draw(st.sampled_from(["=5", ".=5", "train..epochs=5", "train.=5"]))
    key, kind = draw(st.sampled_from(LEAVES))
    return f"{key}={_bad_value(kind, draw)}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(override=bad_overrides())
def test_fuzz_bad_overrides_get_one_line_and_exit_2(override, tmp_path_factory, capsys):
    out = tmp_path_factory.getbasetemp() / "fuzz-run"
    _refused(capsys, ["run", "--config", SMOKE, "--out", str(out), "threads=1", *TINY, override])
    # Refused before any work: nothing was claimed.
    assert not (out / "config.json").exists()


def test_after_the_fuzzed_inputs_the_same_folder_runs(tmp_path, capsys):
    out = tmp_path / "run"
    for override in ("train.widths=[8,16", "train.epochs=abc", "attack.layer=[x]", "train.lr=.nan"):
        _refused(capsys, ["run", "--config", SMOKE, "--out", str(out), "threads=1", *TINY, override])
    assert main(["run", "--config", SMOKE, "--out", str(out), "threads=1", *TINY]) in FINISHED


@pytest.mark.parametrize("override, expected", [
    ("train.widths=[8,16", "override 'train.widths=[8,16': the value is not valid YAML"),
    ("train.method=!!python/name:os.system", "YAML tag such as !!python/... (refused"),
    ("threads=100000", "config key 'threads': expected a thread count (at most 4,096), found 100000"),
    ("data.image_size=100000", "config key 'data.image_size': expected a side in pixels (at most 4,096)"),
    ("train.epochs=1000000000000", "config key 'train.epochs': expected a number of epochs (at most 100,000)"),
    ("train.lr=.nan", "config key 'train.lr': expected a finite number, found nan"),
    ("train.vicreg.sim_weight=.inf", "config key 'train.vicreg.sim_weight': expected a finite number, found inf"),
    ("train.augment.jitter=[.nan,0.4,0.2,0.1]", "config key 'train.augment.jitter[0]': expected a finite number"),
    ("train.projector=999999-2", "config key 'train.projector' = '999999-2': expected at most 16 layers of at most"),
    ("metrics.bootstrap=1e9", "config key 'metrics.bootstrap': expected a number of resamples (at most 1,000,000)"),
])
def test_each_bad_value_of_the_issue_is_one_sentence(override, expected, tmp_path, capsys):
    line = _refused(capsys, ["run", "--config", SMOKE, "--out", str(tmp_path / "r"), override])
    assert expected in line


def test_an_epoch_sweep_past_a_huge_training_is_refused_at_once(tmp_path, capsys):
    """`train.checkpoint_every=1 train.epochs=1e12 attack.epoch=5` hung while listing a trillion epochs."""
    line = _refused(capsys, ["run", "--config", SMOKE, "--out", str(tmp_path / "r"), "train.checkpoint_every=1",
                             "train.epochs=1000000000000", "attack.epoch=5"])
    assert "train.epochs" in line
    # Within the bounds the check is arithmetic: an epoch the training does not keep names a few it does.
    line = _refused(capsys, ["run", "--config", SMOKE, "--out", str(tmp_path / "r"), "train.checkpoint_every=7",
                             "train.epochs=100000", "attack.epoch=5"])
    assert "only after epochs 7, 14, 21, 28, 35, 42, 49, 56, 63, 70, ..., 100000" in line


def test_numbers_in_scientific_notation_are_numbers():
    """YAML 1.1 reads 1e-3 as a string; the config takes it as the number it spells."""
    from dejavu.config import load_config

    config = load_config(SMOKE, ["train.lr=1e-3", "train.epochs=2e1", "train.weight_decay=5E-5"])
    assert (config.train.lr, config.train.epochs, config.train.weight_decay) == (0.001, 20, 5e-5)


def test_more_threads_than_cpus_is_refused_and_the_folder_takes_the_fix(tmp_path, capsys):
    usable = len(os.sched_getaffinity(0))
    out = tmp_path / "r"
    line = _refused(capsys, ["run", "--config", SMOKE, "--out", str(out), *TINY, f"threads={usable + 1}"])
    assert f"this process may use {usable} CPU" in line
    # The folder was claimed by that config, but no stage finished: the corrected command takes it.
    assert main(["run", "--config", SMOKE, "--out", str(out), *TINY, "threads=1"]) in FINISHED


def test_a_stage_command_on_a_folder_without_a_run_refuses_and_says_how_to_start(tmp_path, capsys):
    for folder in (tmp_path / "never", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        for command in ("report", "metrics", "train", "embed"):
            line = _refused(capsys, [command, "--out", str(folder)])
            assert f"holds no dejavu run (no config.json): start one with `dejavu run --out {folder}`" in line
    assert not (tmp_path / "never").exists() and not any((tmp_path / "empty").iterdir())


def test_a_bad_config_file_names_the_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: [1,\n")
    line = _refused(capsys, ["run", "--config", str(path), "--out", str(tmp_path / "r")])
    assert str(path) in line and "not valid YAML" in line and "line" in line
    path.write_bytes(b"\xff\xfe\x00train")
    assert "not UTF-8 text" in _refused(capsys, ["run", "--config", str(path), "--out", str(tmp_path / "r")])


def test_overrides_apply_on_top_of_the_config_saved_in_the_folder(tmp_path, capsys):
    """`dejavu run --out RUN KEY=VALUE` changes that key of the run's own config (not of the demo's)."""
    out = tmp_path / "r"
    assert main(["data", "--config", SMOKE, "--out", str(out), *TINY, "threads=1"]) == 0
    capsys.readouterr()
    assert main(["split", "--out", str(out), "threads=1"]) == 0
    assert "using the config saved in" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["epochs"] == 2 and saved["threads"] == 1


def _small_filesystem(size: str, options: str = "") -> list[str] | None:
    """A prefix that runs a command with a tmpfs of ``size`` mounted at ``/mnt`` in a private mount
    namespace (root inside a user namespace: no privileges needed), or None where namespaces are off."""
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "--mount", "--map-root-user", "sh", "-c",
            f"mount -t tmpfs -o size={size}{options} none \"$0\" && exec \"$@\""]


def _cli(*args):
    return [sys.executable, "-m", "dejavu.cli", *args]


@pytest.mark.slow
def test_a_full_disk_is_one_sentence_and_keeps_what_was_finished(tmp_path, capsys, monkeypatch):
    """A real full disk where the machine allows a private tmpfs: 16 MB, all but 1.8 MB taken by a ballast
    file, so the data stages of a tiny run fit and a later stage finds the disk full; with the ballast
    removed the same command resumes, keeping the finished stages. Elsewhere every write goes to the
    kernel's /dev/full."""
    mount = tmp_path / "small"
    mount.mkdir()
    prefix = _small_filesystem("16m")
    command = " ".join(_cli("run", "--config", SMOKE, "--out", str(mount / "run"), "threads=1",
                            *(f"'{override}'" for override in TINY)))
    if prefix is not None:
        script = (f"head -c {int(14.2 * 2 ** 20)} /dev/zero > \"$0/ballast\"; {command}; echo \"first=$?\"; "
                  f"rm \"$0/ballast\"; {command}; echo \"second=$?\"")
        result = subprocess.run([*prefix[:-1], prefix[-1].replace('exec \"$@\"', script), str(mount)],
                                capture_output=True, text=True, cwd=ROOT)
        err = [line for line in result.stderr.splitlines() if line.startswith("dejavu")]
        assert "first=2" in result.stdout and "second=0" in result.stdout, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert err[0].startswith("dejavu: error: stage '") and "No space left on device (errno 28); the disk is " \
            "full: free space" in err[0], err
        assert "[data] up to date, skipped" in result.stdout
        return
    # No mount namespaces here: every atomic write of the run goes to /dev/full first, which answers ENOSPC.
    import dejavu.runs as runs

    real_replace = os.replace

    def full(src, dst):
        with open("/dev/full", "wb") as handle:
            handle.write(b"x" * 65536)
            handle.flush()
        real_replace(src, dst)

    monkeypatch.setattr(runs.os, "replace", full)
    line = _refused(capsys, ["run", "--config", SMOKE, "--out", str(tmp_path / "run"), "threads=1", *TINY])
    assert "No space left on device (errno 28); the disk is full" in line
    monkeypatch.setattr(runs.os, "replace", real_replace)
    assert main(["run", "--config", SMOKE, "--out", str(tmp_path / "run"), "threads=1", *TINY]) in FINISHED


def test_a_read_only_out_is_one_sentence(tmp_path, capsys):
    prefix = _small_filesystem("1m", ",ro")
    mount = tmp_path / "ro"
    mount.mkdir()
    if prefix is not None:
        result = subprocess.run([*prefix, str(mount), *_cli("run", "--config", SMOKE, "--out", str(mount / "run"))],
                                capture_output=True, text=True, cwd=ROOT)
        line = result.stderr.strip().splitlines()[-1]
    else:  # as root a chmod does not stop writes: a path below a file fails the same way for everyone
        (mount / "file").write_text("")
        result = subprocess.run(_cli("run", "--config", SMOKE, "--out", str(mount / "file" / "run")),
                                capture_output=True, text=True, cwd=ROOT)
        line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert line.startswith("dejavu: error: cannot use '") and ("read-only" in line or "not a folder" in line)


@pytest.mark.slow
def test_running_out_of_memory_is_one_sentence_naming_the_stage(tmp_path):
    """A real allocation failure: the process's address space is capped 2 GiB above what it holds after
    importing torch, and training on 64-px images seen at 1024 px needs more."""
    script = textwrap.dedent("""
        import resource, sys
        from dejavu.cli import main
        with open("/proc/self/statm") as handle:
            held = int(handle.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (held + 2 * 2 ** 30, resource.RLIM_INFINITY))
        sys.exit(main(sys.argv[1:]))
    """)
    sizes = ["data.n_classes=2", "data.images_per_class=20", "data.image_size=64", "data.input_size=1024",
             "split.a_per_class=4", "split.b_per_class=4", "split.x_per_class=4", "split.t_per_class=4", "attack.k=3",
             "crop.min_side_px=4", "train.batch_size=8", "train.epochs=1"]
    result = subprocess.run([sys.executable, "-c", script, "run", "--config", SMOKE, "--out", str(tmp_path / "r"),
                             "threads=1", *sizes], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("dejavu: error: stage 'train_A' ran out of memory; lower what it holds at once")
