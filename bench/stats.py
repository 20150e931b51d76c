"""Latency summaries: percentiles, mean and throughput of a set of timed calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    """Latencies in milliseconds of ``count`` calls (percentiles by linear interpolation)."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        """The summary of ``seconds`` (one duration per call); at least one is needed."""
        if len(seconds) == 0:
            raise ValueError("no latency to summarise")
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        return cls(
            count=int(ms.size),
            mean_ms=round(float(ms.mean()), 3),
            p50_ms=round(float(p50), 3),
            p95_ms=round(float(p95), 3),
            p99_ms=round(float(p99), 3),
            min_ms=round(float(ms.min()), 3),
            max_ms=round(float(ms.max()), 3),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def throughput(count: int, wall_s: float) -> float:
    """Calls per second, rounded to 0.01."""
    return round(count / wall_s, 2) if wall_s > 0 else 0.0
