"""Summaries of timing samples: nearest-rank percentiles, in the unit the samples are in."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.5 = p50, 0.99 = p99) of ``values``."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def p50(values: Sequence[float]) -> float:
    """The median (nearest rank)."""
    return percentile(values, 0.50)


def p99(values: Sequence[float]) -> float:
    """The 99th percentile (nearest rank)."""
    return percentile(values, 0.99)


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` sizes as even as can be, adding up exactly (``split(5, 2)``: 3, 2)."""
    size, rest = divmod(total, parts)
    return [size + (1 if index < rest else 0) for index in range(parts)]


def shown(value: float, unit: str, *, second_digits: int = 3) -> str:
    """A figure with its unit: ``/s`` whole, ``s`` to ``second_digits`` decimals, ``MiB`` to 0.1.

    A ratio (``x``) and any other unit (ms) to 0.01. The side-by-side tables show seconds to
    the ms, the one-run table (``report``) to 10 ms.
    """
    if unit == "/s":
        return f"{value:.0f}/s"
    if unit == "s":
        return f"{value:.{second_digits}f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.2f} {unit}"
