"""The one way a p-value is written: in the verdict (``metrics.json``, the console) and in the reports'
tables, so that a reader never sees ``1e-08`` in one place and ``1.05e-08`` in another."""

from __future__ import annotations


def format_p(p: float) -> str:
    """``p`` to 3 significant digits. A p of exactly 0 is a float underflow (an exact test's p is never 0,
    only below the smallest float), so it reads as the bound it is.

    Example:
        >>> [format_p(v) for v in (1.0, 0.05, 0.0312, 1.0534e-08, 0.0)]
        ['1', '0.05', '0.0312', '1.05e-08', '< 1e-300']
    """
    return "< 1e-300" if p == 0 else f"{p:.3g}"
