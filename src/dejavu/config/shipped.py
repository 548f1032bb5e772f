"""The configs shipped inside the package (``dejavu/configs``), found by name from any folder.

A ``--config`` value is a path when such a file exists; otherwise it names a shipped config, with or
without ``.yaml`` (``smoke``, ``examples/tiny``, ``studies/smoke.yaml``). The package's folder is found
with :mod:`importlib.resources`, so the names work after ``pip install`` as well as in the clone (where
``configs/`` at the root is a link to the same folder). A study names its base config relative to its own
file (``config: ../smoke.yaml``), so resolving a study to its real file resolves its base too.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from dejavu.errors import ConfigError

SUFFIX = ".yaml"
# The folder of the studies (`dejavu sweep`); every other shipped config is for `dejavu run`.
STUDIES = "studies"
# The prefix the clone's paths carry (configs/smoke.yaml): such a path, given where it does not exist,
# still means the shipped file, so the commands in older notes keep working from any folder.
CLONE_PREFIX = "configs/"


def shipped_folder() -> Path:
    folder = resources.files("dejavu") / "configs"
    if not isinstance(folder, Path):
        # A zipped install: the files have no path for the YAML reader or a study's relative `config:`.
        raise ConfigError(f"the shipped configs are inside an archive ({folder}); install dejavu unzipped")
    return folder


def shipped_configs() -> dict[str, Path]:
    """Every shipped config by name (``examples/tiny``): the top level first, then each folder."""
    folder = shipped_folder()
    found = {path.relative_to(folder).with_suffix("").as_posix(): path for path in folder.rglob(f"*{SUFFIX}")}
    return dict(sorted(found.items(), key=lambda item: (item[0].count("/"), item[0])))


def is_study(name: str) -> bool:
    return name.split("/", 1)[0] == STUDIES


def description(path: Path) -> str:
    """The YAML's first comment line: what the config is for (every shipped one starts with one)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            break
    return ""


def _name(value: str) -> str:
    name = value.replace("\\", "/").strip()
    if name.startswith(CLONE_PREFIX):
        name = name[len(CLONE_PREFIX):]
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name


def nearest(value: str, names: list[str], n: int = 3) -> list[str]:
    """The shipped names closest to ``value``, by their last part (``smok`` -> smoke; a shared ``paper/``
    would make every preset look alike), those in the same folder first."""
    folder, _, last = _name(value).rpartition("/")

    def score(name: str) -> tuple[float, bool]:
        other_folder, _, other_last = name.rpartition("/")
        return difflib.SequenceMatcher(None, last, other_last).ratio(), other_folder == folder

    ranked = sorted(names, key=score, reverse=True)
    return [name for name in ranked if score(name)[0] >= 0.6][:n]


def resolve_config(value: str | Path) -> Path:
    """The YAML file a ``--config`` value means: an existing path, else the shipped config of that name.

    Example:
        >>> resolve_config("examples/tiny").name
        'tiny.yaml'
    """
    path = Path(value).expanduser()
    if path.exists():
        return path  # a folder too: the reader refuses it naming the path
    configs = shipped_configs()
    name = _name(str(value))
    if name in configs:
        return configs[name]
    close = nearest(str(value), list(configs))
    hint = f"did you mean {' or '.join(close)}?" if close else "no shipped config has a similar name;"
    raise ConfigError(
        f"config file '{value}' does not exist and is no shipped config name; {hint} "
        "`dejavu configs` lists the shipped ones (--config takes a name or a path)"
    )
