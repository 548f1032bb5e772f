"""Typed run configuration: dataclasses, YAML loading, dotted overrides, validation.

The dataclass defaults *are* the demo run (the shipped `demo` config spells them out; a test keeps
the two identical), so `dejavu run` with no arguments needs no file on disk. The shipped configs
(``dejavu/configs``) are found by name from any folder (:mod:`~dejavu.config.shipped`).

The layer declares itself: each key's type, default, choices (``Literal``) and bounds (``Annotated``)
sit on its field in :mod:`~dejavu.config.schema`; the methods' sections in :mod:`~dejavu.config.methods`
(adding a method is described there); the network strings' parsers in :mod:`~dejavu.config.specs`;
checks across keys in :mod:`~dejavu.config.validation`. It imports nothing from dejavu but
:mod:`dejavu.errors`, so the models import their parsers from here, never the other way round.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from dejavu.config.checks import check_value, field_types
from dejavu.config.keys import nearest_key
from dejavu.config.methods import (
    METHOD_CONFIGS, METHOD_NAMES, BarlowTwinsConfig, ByolConfig, DinoConfig, SimclrConfig, SupervisedConfig,
    VicregConfig,
)
from dejavu.config.schema import (
    BUILT_IN, AttackConfig, AugmentConfig, Config, CropConfig, DataConfig, EvaluateConfig, MetricsConfig, ReportConfig,
    NO_EFFECT_KEYS, RESUMABLE_WITH_OTHER_VALUES, SplitConfig, TrainConfig, choices, saved_epochs, train_recipe,
)
from dejavu.config.shipped import resolve_config, shipped_configs
from dejavu.config.validation import validate
from dejavu.errors import ConfigError

__all__ = [
    "BUILT_IN", "AttackConfig", "AugmentConfig", "BarlowTwinsConfig", "ByolConfig", "Config", "CropConfig", "DataConfig",
    "DinoConfig", "EvaluateConfig", "METHOD_CONFIGS", "METHOD_NAMES", "MetricsConfig", "NO_EFFECT_KEYS",
    "RESUMABLE_WITH_OTHER_VALUES", "ReportConfig",
    "SimclrConfig", "SplitConfig", "SupervisedConfig", "TrainConfig", "VicregConfig", "choices",
    "config_from_dict", "load_config", "parse_overrides", "resolve_config", "saved_epochs", "shipped_configs",
    "train_recipe", "validate",
]


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = f"section '{prefix[:-1]}'" if prefix else "the top level"
        meant = nearest_key(Config, prefix, unknown[0], values[unknown[0]])
        hint = f"did you mean {meant}? " if meant else ""
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' in {where}; {hint}valid keys: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        hint = hints[name]
        path = prefix + name
        if dataclasses.is_dataclass(hint):
            if not isinstance(values[name], dict):
                raise ConfigError(f"config key '{path}': expected a mapping of keys, found {values[name]!r}")
            kwargs[name] = _build(hint, values[name], path + ".")
        else:
            kwargs[name] = check_value(path, values[name], hint)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is a value, not a section")
    node[parts[-1]] = value


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own message spans several lines)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if isinstance(exc, yaml.constructor.ConstructorError):
        return f"a YAML tag such as !!python/... (refused: nothing in a config may construct objects){where}"
    return f"{problem}{where}"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=5", "attack.k=50"]`` into a nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}': expected a dotted key such as train.epochs before '='")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': the value is not valid YAML: {yaml_problem(exc)}; expected a "
                              "plain value such as 5, 1e-3, true, a word, or a list [8,16]") from None
        _set_dotted(tree, key, value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a folder; expected a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {exc.start}); expected a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"config file '{path}' cannot be read: {exc.strerror}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{path}': expected a mapping at the top, found {type(loaded).__name__}")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (a path, or a shipped config's name such as ``smoke``; None: the demo defaults),
    apply dotted overrides, validate.

    Example:
        >>> cfg = load_config(None, ["train.epochs=5", "attack.k=50"])
        >>> cfg.train.epochs, cfg.attack.k
        (5, 50)
    """
    tree: dict[str, Any] = {}
    if path is not None:
        path = resolve_config(path)
        tree = _read_yaml(path)
        try:
            _build(Config, tree, "")  # errors in the file itself name the file
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    config = _build(Config, _merge(tree, parse_overrides(overrides or [])), "")
    validate(config)
    return config


def config_from_dict(tree: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. a run's saved ``config.json``), with dotted
    ``overrides`` applied on top."""
    if not isinstance(tree, dict):
        raise ConfigError(f"expected a mapping of config keys, found {type(tree).__name__}")
    _build(Config, tree, "")  # the saved keys themselves first, so that their errors are not blamed on an override
    config = _build(Config, _merge(tree, parse_overrides(overrides or [])), "")
    validate(config)
    return config
