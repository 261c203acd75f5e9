"""Small statistics helpers for the benchmarks: percentiles, medians, ratios, windows."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "latencies",
    "max_in_window",
    "median_of",
    "median_results",
    "per_window",
    "percentile",
    "ratio",
    "slope",
    "summary_ms",
]


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linear interpolation between ranks.

    Same definition as ``numpy.percentile``'s default. Raises ``ValueError``
    on no values or ``q`` outside 0-100.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q={q} must be within 0-100")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """``ours / theirs``, or None when either is missing or ``theirs`` is not positive."""
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


def latencies(start: Mapping[str, int], end: Mapping[str, int]) -> list[float]:
    """``end[k] - start[k]`` (milliseconds) for every key in both mappings."""
    return [float(end[k] - start[k]) for k in start.keys() & end.keys()]


def summary_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p99 and max of a list of millisecond latencies (None when empty)."""
    if not values:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
    }


def max_in_window(times: Sequence[float], window: float) -> int:
    """Most events in any half-open window ``[t, t + window)`` over sorted-or-not ``times``."""
    ordered = sorted(times)
    best = 0
    lo = 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def per_window(times: Sequence[float], window: float) -> list[int]:
    """How many of ``times`` fall in each consecutive ``window`` from the first of them."""
    if not times:
        return []
    first = min(times)
    counts = [0] * (int((max(times) - first) / window) + 1)
    for t in times:
        counts[int((t - first) / window)] += 1
    return counts


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope dy/dx of (x, y) points (None with fewer than two distinct x)."""
    if len(points) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def median_of(values: Iterable[float | int | None]) -> float | None:
    """Median of the values that are not None (None when there are none)."""
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def median_results(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge repeated runs: numbers become their median, nested mappings recurse.

    A key's value is taken from the first run when it is not a number (text,
    lists); booleans are kept from the first run too.
    """
    if not runs:
        return {}
    out: dict[str, Any] = {}
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run if k not in keys]
    for key in keys:
        values = [run.get(key) for run in runs]
        sample = next((v for v in values if v is not None), None)
        if isinstance(sample, bool) or sample is None:
            out[key] = sample
        elif isinstance(sample, int | float):
            numbers = [v for v in values if isinstance(v, int | float)]
            med = median_of(numbers)
            if med is not None and med.is_integer() and all(isinstance(v, int) for v in numbers):
                out[key] = int(med)  # counts stay whole numbers
            else:
                out[key] = None if med is None else round(med, 3)
        elif isinstance(sample, Mapping):
            out[key] = median_results([v for v in values if isinstance(v, Mapping)])
        else:
            out[key] = sample
    return out
