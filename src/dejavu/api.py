"""The Python API: the test from a notebook or a script, exactly as the command line runs it.

Example:
    >>> import dejavu
    >>> result = dejavu.run("smoke", out="runs/smoke")              # train both models, attack, report
    >>> result = dejavu.audit(target="A.pth", reference="B.pth", config="runs/demo/config.json",
    ...                       out="runs/audit", **{"attack.k": 50})  # models trained elsewhere
    >>> result.outcome.decision, result.outcome.sentence, result.report
"""

from __future__ import annotations

import csv
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from dejavu.config import Config, config_from_dict, load_config
from dejavu.errors import ConfigError, RunFolderError
from dejavu.metrics.outcomes import Outcome
from dejavu.metrics.schema import MetricsFile, read_metrics
from dejavu.models.outside import register_module
from dejavu.models.outside_clip import absolute_arch
from dejavu.runs import Run, folder_lock, read_json
from dejavu.stages import finished_stages_hold, run_all

TABLES = ("metrics.json", "samples.csv", "control_samples.csv", "evaluation.json", "sanity.json")


@dataclass(frozen=True)
class Result:
    """A finished run: its folder, ``metrics`` (``metrics.json``, typed), each test's outcome, the report and the
    tables.

    ``outcome`` is the headline test's (a CLIP run's vision-language test, else the image test, two-model or
    one-model); ``outcomes`` every test that ran, by name, in that order. An outcome holds the ``decision``
    (``detected``, ``not_detected``, ``inconclusive``, ``no_verdict``), the deciding ``statistic`` with its
    ``estimate``, ``interval`` (at ``level``) and ``p``, ``alpha``, the ``reasons`` and the ``sentence``.

    Example (a notebook):
        >>> result = dejavu.run("smoke", out="runs/smoke")
        >>> result.outcome.decision, result.outcome.estimate, result.outcome.interval
        >>> [(o.test, o.decision) for o in result.outcomes.values()]
        >>> rows = result.samples()                   # a pandas DataFrame when pandas is installed, else dicts
        >>> rows[rows.partition == "memorized"].head()
    """

    out: Path
    metrics: MetricsFile
    report: Path
    tables: dict[str, Path]

    @property
    def outcomes(self) -> dict[str, Outcome]:
        return self.metrics.outcomes

    @property
    def outcome(self) -> Outcome:
        """The headline test's outcome (the first of :attr:`outcomes`)."""
        return next(iter(self.metrics.outcomes.values()))

    @property
    def decision(self) -> str:
        return self.outcome.decision

    @property
    def verdict(self) -> str:
        """The headline outcome in words."""
        return self.outcome.sentence

    @property
    def passed(self) -> bool:
        """Whether the models and data passed every sanity gate."""
        return self.metrics.sanity is None or self.metrics.sanity.passed

    @property
    def gap(self) -> float:
        """Target minus reference accuracy on the attacked crops, pooled (a fraction)."""
        return self.metrics.gap

    @property
    def mcnemar_p(self) -> float:
        return self.metrics.mcnemar_p

    def samples(self, which: str = "attack", frame: bool | None = None) -> Any:
        """The per-crop table: ``which`` "attack" (``samples.csv``: one row per attacked crop and direction) or
        "control" (``control_samples.csv``: T's crops), with the columns the report and metrics.json are
        computed from. A pandas DataFrame when ``frame`` is true, or None and pandas is installed; else a list
        of dicts whose numbers are int or float."""
        names = {"attack": "samples.csv", "control": "control_samples.csv"}
        if which not in names:
            raise ConfigError(f"Result.samples: which = {which!r}; expected 'attack' or 'control'")
        return read_table(self.out / names[which], frame)

    def __repr__(self) -> str:
        o = self.outcome
        low, high = o.interval
        return (f"Result({o.test}: {o.decision}, {o.statistic}={o.estimate:+.4f} "
                f"[{100 * o.level:g} % CI {low:+.4f}, {high:+.4f}], p={o.p:.3g}, alpha={o.alpha:g}; "
                f"out={str(self.out)!r}, report={str(self.report)!r})")


def read_table(path: Path, frame: bool | None = None) -> Any:
    """A run folder's CSV as a pandas DataFrame (``frame`` true, or None with pandas installed) or as a list of
    dicts with int / float values where a cell reads as one."""
    if not path.is_file():
        raise RunFolderError(f"'{path}' is missing: the run did not finish its metrics stage (run it again)")
    if frame is None:
        frame = importlib.util.find_spec("pandas") is not None
    if frame:
        import pandas  # optional: only where asked for, or installed

        return pandas.read_csv(path, dtype={"id": str})
    with open(path, newline="", encoding="utf-8") as handle:
        return [{key: value if key == "id" else _number(value) for key, value in row.items()}
                for row in csv.DictReader(handle)]


def _number(cell: str) -> Any:
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def result_of(out: str | Path) -> Result:
    """The :class:`Result` of a finished run folder (read from its files)."""
    out = Path(out).resolve()
    return Result(out=out, metrics=read_metrics(out / "metrics.json"), report=out / "report.html",
                  tables={name: out / name for name in TABLES if (out / name).is_file()})


def _overrides(keys: Mapping[str, Any]) -> list[str]:
    """``{"attack.k": 50, "train__epochs": 5}`` as the command line's KEY=VALUE overrides (values as JSON,
    which the overrides' YAML reads back exactly)."""
    return [f"{key.replace('__', '.')}={json.dumps(value)}" for key, value in keys.items()]


def config_for(out: Path, config: str | Path | Config | None, overrides: list[str]) -> Config:
    """The run's config: ``config`` (a shipped name, a YAML or JSON file, or a Config) with the overrides;
    without one, the config saved in ``out`` when it holds a run, else the demo defaults."""
    if isinstance(config, Config):
        return config_from_dict(config.to_dict(), overrides)
    if config is None and (out / "config.json").is_file():
        return config_from_dict(read_json(out / "config.json"), overrides)
    if config is not None and Path(config).suffix == ".json":  # a run folder's config.json
        return config_from_dict(read_json(config), overrides)
    return load_config(config, overrides)


def execute(out: str | Path, config: Config, command: str = "dejavu run", log: Any = print) -> Result:
    """Every stage of ``config`` in the run folder ``out`` (finished ones of the same config are kept),
    holding the folder's lock; returns the result."""
    out = Path(out)
    run = Run(out, config)
    with folder_lock(out, command):
        run.claim(still_valid=lambda: finished_stages_hold(run))
        run_all(run, log=log)
    return result_of(out)


def run(config: str | Path | Config | None = None, out: str | Path | None = None, **overrides: Any) -> Result:
    """The whole test (``dejavu run``): train both models, attack, report. ``config``: a shipped config's
    name (``"smoke"``, ``"demo"``, ...), a YAML file or a :class:`Config`; keyword overrides by dotted key
    (``**{"train.epochs": 5}``, or ``train__epochs=5``)."""
    folder = Path(out) if out is not None else Path("runs") / (Path(str(config)).stem if config else "demo")
    return execute(folder, config_for(folder, config, _overrides(overrides)))


def audit(target: str | Path | nn.Module, reference: str | Path | nn.Module | None = None, *,
          arch: str | None = None, data: Mapping[str, Any] | None = None, out: str | Path | None = None,
          config: str | Path | Config | None = None, **overrides: Any) -> Result:
    """Audit models trained elsewhere (``dejavu audit``): ``target`` trained on the run's A (and the shared
    set), ``reference`` on B with the same recipe, each a checkpoint path or an ``nn.Module`` (None: the
    one-model test, against a correlation classifier; ``correlation.*``). ``arch``: the network (default the
    config's ``train.backbone``);
    ``data``: data.* keys (``{"dataset": "imagenet", "root": ...}``); ``config``: the config of the run that
    made the split (default: the one saved in ``out``, else the demo's)."""
    if out is None:
        raise ConfigError("dejavu.audit: give out=FOLDER, the run folder (the one whose split the models were "
                          "trained on, or a new one)")
    folder = Path(out)
    keys: dict[str, Any] = {f"data.{key}": value for key, value in (data or {}).items()}
    keys["model.target"] = _model(target)
    # None is the one-model test, also when the config given is a two-model audit's.
    keys["model.reference"] = _model(reference) if reference is not None else ""
    if arch is not None:
        keys["model.arch"] = absolute_arch(arch)
    keys.update({key.replace("__", "."): value for key, value in overrides.items()})
    resolved = config_for(folder, config, _overrides(keys))
    refuse_trained_folder(folder)
    return execute(folder, resolved, "dejavu audit")


def _model(model: str | Path | nn.Module) -> str:
    if isinstance(model, nn.Module):
        return register_module(model)
    return str(Path(model).expanduser().resolve())


def refuse_trained_folder(out: Path) -> None:
    """An audit never replaces models dejavu trained: a folder whose training finished is refused."""
    trained = [name for name in ("train_A", "train_B") if (out / "stages" / f"{name}.done.json").is_file()
               and (out / "models" / name.removeprefix("train_") / "history.json").is_file()]
    if trained:
        raise RunFolderError(
            f"'{out}' holds models dejavu trained ({', '.join(trained)}); an audit would replace them: audit into a "
            f"new --out with that run's config (--config {out / 'config.json'}), which makes the same split"
        )
