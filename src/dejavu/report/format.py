"""How numbers are written in the reports (run report and sweep page); registered as Jinja2 filters.

Every function takes a raw value from ``metrics.json`` (or a sweep row) and returns plain text; a
missing value (``None`` or NaN) reads ``n/a``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Sequence

from dejavu.metrics.pvalue import format_p


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number_or_nan(value: Any) -> float:
    return math.nan if is_missing(value) else float(value)


def pct(value: Any) -> str:
    """A fraction as a percentage: ``0.1234`` -> ``12.3 %``."""
    return "n/a" if is_missing(value) else f"{100 * float(value):.1f} %"


def points(value: Any) -> str:
    """A difference of fractions in signed percentage points: ``0.05`` -> ``+5.0``."""
    return "n/a" if is_missing(value) else f"{100 * float(value):+.1f}"


def interval(bounds: Sequence[Any] | None) -> str:
    """A (low, high) pair of fractions in points: ``-1.0 to +3.0 points``."""
    if not bounds or any(is_missing(v) for v in bounds):
        return "n/a"
    return f"{points(bounds[0])} to {points(bounds[1])} points"


def p_value(value: Any) -> str:
    """A p-value as the verdict writes it (:func:`dejavu.metrics.pvalue.format_p`): ``1.05e-08``, ``< 1e-300``."""
    return "n/a" if is_missing(value) else format_p(float(value))


def integer(value: Any) -> str:
    return "n/a" if is_missing(value) else str(int(value))


def auc(value: Any) -> str:
    return "n/a" if is_missing(value) else f"{float(value):.3f}"


def signed3(value: Any) -> str:
    return "n/a" if is_missing(value) else f"{float(value):+.3f}"


def value_range(bounds: Sequence[Any] | None, show: Callable[[Any], str]) -> str:
    """``show(low) to show(high)``, or ``n/a``."""
    if not bounds or any(is_missing(v) for v in bounds):
        return "n/a"
    return f"{show(bounds[0])} to {show(bounds[1])}"


def format_value(value: Any) -> str:
    """A grid value as written in tables, CSV and folder names (strings bare, the rest as JSON)."""
    return json.dumps(value) if not isinstance(value, str) else value


# The formats of :class:`dejavu.metrics.schema.SummaryRow`, by name.
FORMATS: dict[str, Callable[[Any], str]] = {
    "integer": integer, "pct": pct, "points": points, "interval": interval, "p_value": p_value,
}

# Jinja2 filters: ``{{ value | pct }}``.
FILTERS: dict[str, Callable[..., str]] = {
    **FORMATS, "auc": auc, "signed3": signed3, "value_range": value_range, "format_value": format_value,
}
