"""The HTTP load driver: ``concurrency`` clients POST uploads until a request count or a deadline is reached.

One asyncio event loop, one ``httpx.AsyncClient`` (a connection pool as large as the concurrency); each
client takes the next request number, so exactly ``max_requests`` are sent unless the deadline comes first.
The same driver runs against a real server (over TCP) and against the app in process
(``httpx.ASGITransport``), so the two are measured alike.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from service.bench.images import ImageFile
from service.bench.stats import LatencySummary, throughput

TIMEOUT_STATUS = "timeout"
TRANSPORT_ERROR_STATUS = "connection_error"


@dataclass(frozen=True)
class PlannedRequest:
    """One POST of ``image`` to ``path`` with query ``params``; ``expected`` is the status it should get."""

    image: ImageFile
    params: Mapping[str, str] = field(default_factory=dict)
    path: str = "/predict"
    expected: int = 200


@dataclass(frozen=True)
class Sample:
    """One answered (or failed) request: when it started after the run began, how long, which status."""

    started_s: float
    latency_s: float
    status: str  # "200", "429", ... or "timeout" / "connection_error"
    expected: bool
    server_timings_ms: Mapping[str, float | None] | None = None


@dataclass(frozen=True)
class LoadResult:
    """The samples of one run and its wall-clock time."""

    samples: list[Sample]
    wall_s: float
    concurrency: int

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == "200"]

    @property
    def statuses(self) -> dict[str, int]:
        return dict(sorted(Counter(s.status for s in self.samples).items()))

    @property
    def unexpected(self) -> dict[str, int]:
        """Statuses that differ from what each request should have got (errors of the service)."""
        return dict(sorted(Counter(s.status for s in self.samples if not s.expected).items()))

    def latency(self) -> LatencySummary | None:
        ok = self.ok
        return LatencySummary.of([s.latency_s for s in ok]) if ok else None

    def summary(self) -> dict[str, Any]:
        latency = self.latency()
        return {
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "ok": len(self.ok),
            "statuses": self.statuses,
            "unexpected": self.unexpected,
            "wall_s": round(self.wall_s, 3),
            "throughput_rps": throughput(len(self.ok), self.wall_s),
            "latency": None if latency is None else latency.as_dict(),
        }


async def drive(
    client: httpx.AsyncClient,
    plan: Callable[[int], PlannedRequest],
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    keep_server_timings: bool = False,
) -> LoadResult:
    """Send ``plan(0)``, ``plan(1)``, ... from ``concurrency`` clients.

    Stops after ``max_requests`` requests or once ``max_seconds`` have passed (requests in flight finish).
    """
    numbers = itertools.count()
    samples: list[Sample] = []
    started = time.perf_counter()
    deadline = started + max_seconds

    async def one_client() -> None:
        while time.perf_counter() < deadline:
            number = next(numbers)
            if number >= max_requests:
                return
            request = plan(number)
            files = {"file": (request.image.name, request.image.data, request.image.content_type)}
            sent = time.perf_counter()
            timings = None
            try:
                response = await client.post(request.path, params=dict(request.params), files=files)
                status = str(response.status_code)
                if keep_server_timings and response.status_code == 200:
                    timings = response.json().get("timings_ms")
            except httpx.TimeoutException:
                status = TIMEOUT_STATUS
            except httpx.TransportError:
                status = TRANSPORT_ERROR_STATUS
            answered = time.perf_counter()
            samples.append(
                Sample(
                    started_s=sent - started,
                    latency_s=answered - sent,
                    status=status,
                    expected=status == str(request.expected),
                    server_timings_ms=timings,
                )
            )

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return LoadResult(samples=samples, wall_s=time.perf_counter() - started, concurrency=concurrency)


def client_limits(concurrency: int) -> httpx.Limits:
    """A pool that never makes a client wait for a connection."""
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
