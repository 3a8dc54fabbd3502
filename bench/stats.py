"""Percentiles and latency curves of the bench's samples."""

from __future__ import annotations

import math
from typing import Any

# ----------------------------------------------------------------------------- statistics


def pct(values: list[float], scale: float = 1000.0) -> dict[str, Any] | None:
    """p50/p90/p99/max/mean of seconds, in milliseconds (nearest-rank)."""
    if not values:
        return None
    v = sorted(values)
    n = len(v)

    def at(q: float) -> float:
        return round(v[min(n - 1, max(0, math.ceil(q * n) - 1))] * scale, 3)

    return {"n": n, "p50": at(0.50), "p90": at(0.90), "p99": at(0.99),
            "max": round(v[-1] * scale, 3), "mean": round(sum(v) / n * scale, 3)}


def quantile_curve(values: list[float]) -> list[float]:
    """201 quantiles (0, 0.5, …, 100 %), in ms, for CDF plots."""
    if not values:
        return []
    v = sorted(values)
    n = len(v)
    return [round(v[min(n - 1, int(i / 200 * (n - 1)))] * 1000, 3) for i in range(201)]
