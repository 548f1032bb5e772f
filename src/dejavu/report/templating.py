"""The Jinja2 environment of the reports: templates in ``templates/``, autoescaping on, strict variables.

Python code hands templates plain data (strings, numbers, lists and dicts of them); every value is
escaped when it is written into the page, and images travel as ``data:`` URIs built into ``<img>`` tags
by the templates, so a page is one self-contained file.
"""

from __future__ import annotations

import base64
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from dejavu.report.format import FILTERS, FORMATS


def summary_format(value: Any, name: str) -> str:
    """``{{ value | summary_format(row.format) }}``: a :class:`~dejavu.metrics.schema.SummaryRow`'s format."""
    return FORMATS[name](value)


ENV = Environment(
    loader=PackageLoader("dejavu.report", "templates"),
    autoescape=select_autoescape(["html"], default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(FILTERS)
ENV.filters["summary_format"] = summary_format


def render(template: str, /, **context: Any) -> str:
    """``templates/<template>`` rendered with ``context``."""
    return ENV.get_template(template).render(**context)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
