"""The valid dotted config keys, and the one a misspelled key most likely meant."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any

from dejavu.config.checks import field_types


@functools.cache
def dotted_keys(cls: type, prefix: str = "") -> tuple[str, ...]:
    """Every key under the section ``cls``, sections and leaves: ``train``, ``train.epochs``, ``train.vicreg.sim_weight``."""
    keys: list[str] = []
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += dotted_keys(hints[f.name], key + ".")
    return tuple(keys)


def nearest_key(root: type, prefix: str, name: str, value: Any) -> str | None:
    """The valid key that the unknown ``prefix + name`` (holding ``value``) most likely meant, quoted; or
    the keys, when the same name lives in two or three sections (``'train.epochs' or 'correlation.epochs'``).

    A near name in the same section (``train.epoch`` -> ``train.epochs``), else the same name in the other
    sections that have it (``epochs`` at the top level -> ``train.epochs`` or ``correlation.epochs``); a
    misspelled section is followed into the keys given under it (``trian.epoch`` -> ``train.epochs``). Only
    names are compared, never whole dotted paths: a shared ``train.`` would make any two keys of a section
    look alike.
    """
    meant = _nearest(root, prefix, name, value)
    return " or ".join(f"'{key}'" for key in meant) if meant else None


def _nearest(root: type, prefix: str, name: str, value: Any) -> list[str]:
    keys = dotted_keys(root)
    siblings = [key[len(prefix):] for key in keys if key.startswith(prefix) and "." not in key[len(prefix):]]
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.75)
    same = [key for key in keys if key.rsplit(".", 1)[-1] == name]
    meant = [prefix + close[0]] if close else same if 1 <= len(same) <= 3 else []
    if len(meant) != 1 or not isinstance(value, dict) or len(value) != 1:
        return meant
    (inner, inner_value), = value.items()
    return _nearest(root, meant[0] + ".", inner, inner_value) or meant
