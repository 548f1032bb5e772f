"""The shipped configs: found by name from any folder, listed by `dejavu configs`, inside the wheel."""

import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dejavu.cli import main
from dejavu.config import load_config, resolve_config, shipped_configs
from dejavu.config.shipped import description, is_study
from dejavu.errors import ConfigError
from dejavu.sweep import load_study

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "dejavu" / "configs"
NAMED_IN_README = {"smoke", "demo", "vicreg_demo", "examples/tiny", "paper/vicreg", "studies/smoke",
                   "studies/paper_findings"}
# Keys a file dataset needs before it validates; the built-in scenes data ignores data.root.
ROOTED = ["data.root=/data/train"]


def test_clone_link_is_the_package_folder():
    assert (ROOT / "configs").is_symlink() and (ROOT / "configs").resolve() == SHIPPED.resolve()


def test_every_yaml_is_shipped_by_name():
    names = shipped_configs()
    assert sorted(names) == sorted(p.relative_to(SHIPPED).with_suffix("").as_posix() for p in SHIPPED.rglob("*.yaml"))
    assert NAMED_IN_README <= set(names)
    assert [name for name in names if "/" not in name] == sorted(name for name in names if "/" not in name)


def test_every_shipped_config_starts_with_a_one_line_description():
    for name, path in shipped_configs().items():
        assert path.read_text(encoding="utf-8").startswith("# "), name
        text = description(path)
        # A sentence of its own: the listing shows only this line.
        assert text.endswith(".") and 40 <= len(text) <= 120, (name, text)
        assert "configs/" not in path.read_text(encoding="utf-8"), f"{name} still names a clone path"


def test_names_resolve_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, path in shipped_configs().items():
        for spelling in (name, f"{name}.yaml", f"configs/{name}.yaml"):
            assert resolve_config(spelling) == path
        if not is_study(name):
            assert load_config(name, ROOTED).to_dict() == load_config(path, ROOTED).to_dict()


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke.yaml").write_text("train:\n  epochs: 3\n")
    assert load_config("smoke.yaml").train.epochs == 3
    assert load_config("smoke").to_dict() == load_config(SHIPPED / "smoke.yaml").to_dict()


@pytest.mark.parametrize("value, meant", [("smok", "smoke"), ("tiny", "examples/tiny"),
                                          ("studies/smok", "studies/smoke"), ("vicreg", "paper/vicreg")])
def test_an_unknown_name_suggests_the_nearest(value, meant, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve_config(value)
    message = str(info.value)
    assert f"'{value}' does not exist" in message and meant in message.split("did you mean", 1)[1]
    assert "`dejavu configs`" in message and "\n" not in message


def test_studies_find_their_base_config_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved, points = load_study(resolve_config("studies/smoke"))
    assert Path(resolved["config"]) == (SHIPPED / "smoke.yaml").resolve() and points
    resolved, _ = load_study(resolve_config("studies/paper_findings"))
    assert Path(resolved["config"]) == (SHIPPED / "demo.yaml").resolve()
    resolved, _ = load_study(resolve_config("studies/paper_imagenet_vicreg"))
    assert Path(resolved["config"]) == (SHIPPED / "paper" / "vicreg.yaml").resolve()


def test_a_study_outside_the_package_names_its_base_by_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "mine.yaml"
    study.write_text("config: smoke\ngrid: {attack.k: [5, 10]}\nseeds: 1\n")
    resolved, points = load_study(study)
    assert resolved["config"] == str(resolve_config("smoke").resolve()) and len(points) == 2
    study.write_text("config: smok\ngrid: {attack.k: [5, 10]}\n")
    with pytest.raises(ConfigError, match=r"study '.*mine.yaml', key 'config'.*did you mean smoke"):
        load_study(study)


def test_configs_command_lists_every_name_with_its_line(capsys):
    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    for name, path in shipped_configs().items():
        assert any(line.split() and line.split()[0] == name and description(path) in line
                   for line in listing.splitlines()), name
    assert str(SHIPPED.resolve()) in listing or str(SHIPPED) in listing


def test_cli_takes_a_name_from_another_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["split", "--config", "smoke", "--out", "run", "threads=1"]) == 0
    assert (tmp_path / "run" / "data" / "split.json").is_file()
    capsys.readouterr()  # the split's progress bars
    assert main(["run", "--config", "smok", "--out", "other"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean smoke" in err and not (tmp_path / "other").exists()
    assert main(["sweep", "--config", "studies/smok", "--out", "sweep"]) == 2
    assert "did you mean studies/smoke" in capsys.readouterr().err


def test_examples_print_commands_that_work_from_another_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["examples", "ex"]) == 0
    commands = [line.split(None, 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert len(commands) == 4 and all("--config examples/tiny " in command for command in commands)
    for command in commands:
        argv = shlex.split(command)
        assert argv[:2] == ["dejavu", "run"]
        # The split stage reads the files and the config; the full run is the readers' tests' business.
        assert main(["split", *argv[2:], "threads=1"]) == 0, command


@pytest.mark.slow
def test_configs_travel_in_the_wheel(tmp_path):
    """A real, non-editable install: build the wheel from a copy of the sources, install it, run it elsewhere."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(source)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("dejavu-*.whl")
    inside = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("dejavu/configs/")}
    assert inside == {f"dejavu/configs/{p.relative_to(SHIPPED).as_posix()}"
                      for p in [*SHIPPED.rglob("*.yaml"), *SHIPPED.glob("open_clip/*/open_clip_config.json")]}
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def dejavu(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dejavu", *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=300)

    listed = dejavu("configs")
    assert listed.returncode == 0, listed.stderr
    assert f"the files are in {site / 'dejavu' / 'configs'}" in listed.stdout
    assert all(name in listed.stdout for name in NAMED_IN_README)
    split = dejavu("split", "--config", "smoke", "--out", "run", "threads=1")
    assert split.returncode == 0, split.stderr
    assert (elsewhere / "run" / "data" / "split.json").is_file()
    # The names and the hint from the installed copy (the CLI's one-line error is checked in-process above).
    probe = ("from dejavu.config import resolve_config, shipped_configs\n"
             "print(sorted(shipped_configs()), resolve_config('examples/tiny'))\n"
             "resolve_config('paper/vicreeg')\n")
    names = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert str(sorted(shipped_configs())) in names.stdout
    assert str(site / "dejavu" / "configs" / "examples" / "tiny.yaml") in names.stdout
    assert "did you mean paper/vicreg" in names.stderr
