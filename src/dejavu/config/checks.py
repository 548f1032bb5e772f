"""Checks declared on the config fields: choices as ``Literal`` types, bounds as ``Annotated`` metadata.

A field reads ``epochs: Annotated[int, POSITIVE] = 1000`` or ``precision: Literal["fp32", "bf16"] = "fp32"``;
:func:`check_value` coerces a loaded value to the field's type (choices included) and :func:`check_fields`
runs every field's bounds, then the section's own ``check(key)`` if it has one (checks across its fields).
Both name the dotted key in the ConfigError, so no section needs range checks written out by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

from dejavu.errors import ConfigError


@dataclass(frozen=True)
class Check:
    """A bound on one value: ``ok(value)``, else "config key 'K': expected <expected>, found <value>"."""

    ok: Callable[[Any], bool]
    expected: str

    def __call__(self, key: str, value: Any) -> None:
        if not self.ok(value):
            raise ConfigError(f"config key '{key}': expected {self.expected}, found {value}")


def at_least(low: float, expected: str | None = None) -> Check:
    """``value >= low``; the message says ``expected`` (default ``">= low"``)."""
    return Check(lambda value: value >= low, expected or f">= {low}")


def _interval(text: str) -> Callable[[float], bool]:
    """``"(0, 1]"`` -> a test of membership in that interval."""
    low, high = (float(part) for part in text[1:-1].split(","))
    above = (lambda v: v > low) if text[0] == "(" else (lambda v: v >= low)
    below = (lambda v: v < high) if text[-1] == ")" else (lambda v: v <= high)
    return lambda value: above(value) and below(value)


def within(interval: str, what: str) -> Check:
    """``within("[0, 1)", "a momentum")``: the value lies in the interval; message "a momentum in [0, 1)"."""
    inside = _interval(interval)
    return Check(inside, f"{what} in {interval}")


def pair_within(interval: str) -> Check:
    """A ``[low, high]`` list with low <= high, both in the interval (crop-area ranges)."""
    inside = _interval(interval)
    return Check(lambda v: len(v) == 2 and inside(v[0]) and inside(v[1]) and v[0] <= v[1], f"[low, high] in {interval}")


def at_most(high: float, what: str) -> Check:
    """``value <= high``: the sizes that would exhaust memory or time long before they finish."""
    return Check(lambda value: value <= high, f"{what} (at most {high:,})")


POSITIVE = at_least(1, "a positive integer")
NON_NEGATIVE = at_least(0)
PROBABILITY = within("[0, 1]", "a probability")


@functools.cache
def _hints(cls: type, extras: bool) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=extras)


def field_types(cls: type) -> dict[str, Any]:
    """The fields' types, ``Annotated`` bounds stripped (``Literal`` choices kept)."""
    return _hints(cls, False)


def literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal`` type (``None`` for any other type)."""
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None


def unknown_value(key: str, value: Any, valid: tuple[Any, ...]) -> ConfigError:
    return ConfigError(f"config key '{key}': unknown value '{value}'; valid: {', '.join(map(str, valid))}")


# YAML 1.1 (PyYAML) reads "1e-3" and "5e3" as strings: a number written so is taken as the number it is.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# Integers beyond this do not fit the 64-bit fields of JSON readers, numpy and torch.
_INT_LIMIT = 2 ** 63 - 1


def _number_text(value: Any) -> float | None:
    """The number a string spells (``"1e-3"`` -> 0.001), or None."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return None


def check_value(path: str, value: Any, annotation: Any) -> Any:
    """Coerce ``value`` to ``annotation`` where lossless, else raise a ConfigError naming ``path``.

    Numbers must be finite (NaN or infinity in a loss weight or a learning rate only surfaces hours later
    as a diverged training); ``"1e-3"`` counts as a number."""
    origin = typing.get_origin(annotation)
    valid = literal_choices(annotation)
    if valid is not None:
        value = check_value(path, value, type(valid[0]))
        if value not in valid:
            raise unknown_value(path, value, valid)
        return value
    if origin in (list, types.GenericAlias) or origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{path}': expected a list, found {value!r}")
        return [check_value(f"{path}[{i}]", item, item_type) for i, item in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{path}': expected true or false, found {value!r}")
        return value
    if annotation is int:
        spelled = _number_text(value)
        if spelled is not None and math.isfinite(spelled) and spelled == int(spelled) and "." not in value:
            value = int(spelled)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{path}': expected an integer, found {value!r}")
        if abs(value) > _INT_LIMIT:
            raise ConfigError(f"config key '{path}': expected an integer of at most 2**63 - 1, found {value}")
        return value
    if annotation is float:
        spelled = _number_text(value)
        value = spelled if spelled is not None else value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{path}': expected a number, found {value!r}")
        if isinstance(value, int) and abs(value) > _INT_LIMIT:
            raise ConfigError(f"config key '{path}': expected a number of at most 2**63 - 1, found {value}")
        if not math.isfinite(value):
            raise ConfigError(f"config key '{path}': expected a finite number, found {value}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{path}': expected a string, found {value!r}")
        return value
    raise AssertionError(f"unsupported annotation {annotation} at {path}")


def check_fields(section: Any, prefix: str = "") -> None:
    """Every field's choices and bounds, depth first in field order, then the section's own ``check(key)``.

    All sections are checked, the methods not selected too, so that a typo never waits for a later run.
    """
    hints = _hints(type(section), True)
    for item in dataclasses.fields(section):
        key, value, hint = prefix + item.name, getattr(section, item.name), hints[item.name]
        if dataclasses.is_dataclass(value):
            check_fields(value, key + ".")
            continue
        bounds = ()
        if typing.get_origin(hint) is typing.Annotated:
            hint, *bounds = typing.get_args(hint)
        valid = literal_choices(hint)
        if valid is not None and value not in valid:
            raise unknown_value(key, value, valid)
        for bound in bounds:
            bound(key, value)
    if hasattr(section, "check"):
        section.check(prefix[:-1])
