"""The load drivers: ``concurrency`` clients POST uploads until a request count or a deadline is reached.

Each client takes the next request number, so exactly ``max_requests`` are sent unless the deadline comes
first. :func:`drive_http` talks to a real server over TCP (threads sharing a urllib3 pool: a light client);
:func:`drive` runs the same plan through any ``httpx.AsyncClient``, which is how the app is driven in process
(``httpx.ASGITransport``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import urllib3

from bench.images import ImageFile
from bench.stats import LatencySummary, throughput

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


class _Schedule:
    """Hands out request numbers until ``max_requests`` or the deadline, and collects the samples."""

    def __init__(self, max_requests: int, max_seconds: float) -> None:
        self._numbers = itertools.count()  # next() is atomic under the GIL
        self._max_requests = max_requests
        self.samples: list[Sample] = []
        self.started = time.perf_counter()
        self._deadline = self.started + max_seconds

    def next_number(self) -> int | None:
        """The next request to send, or None when the count or the time is used up."""
        if time.perf_counter() >= self._deadline:
            return None
        number = next(self._numbers)
        return number if number < self._max_requests else None

    def record(
        self, request: PlannedRequest, sent: float, status: str, timings: Mapping[str, float | None] | None
    ) -> None:
        """One answered (or failed) request, sent at ``sent`` (``time.perf_counter()``) and done now."""
        self.samples.append(  # list.append is atomic under the GIL
            Sample(
                started_s=sent - self.started,
                latency_s=time.perf_counter() - sent,
                status=status,
                expected=status == str(request.expected),
                server_timings_ms=timings,
            )
        )

    def result(self, concurrency: int) -> LoadResult:
        return LoadResult(self.samples, wall_s=time.perf_counter() - self.started, concurrency=concurrency)


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
    schedule = _Schedule(max_requests, max_seconds)

    async def one_client() -> None:
        while (number := schedule.next_number()) is not None:
            request = plan(number)
            files = {"file": (request.image.name, request.image.data, request.image.content_type)}
            timings = None
            sent = time.perf_counter()
            try:
                response = await client.post(request.path, params=dict(request.params), files=files)
                status = str(response.status_code)
                if keep_server_timings and response.status_code == 200:
                    timings = response.json().get("timings_ms")
            except httpx.TimeoutException:
                status = TIMEOUT_STATUS
            except httpx.TransportError:
                status = TRANSPORT_ERROR_STATUS
            schedule.record(request, sent, status, timings)

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return schedule.result(concurrency)


def client_limits(concurrency: int) -> httpx.Limits:
    """A pool that never makes a client wait for a connection."""
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def drive_http(
    base_url: str,
    plan: Callable[[int], PlannedRequest],
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    timeout_s: float = 60.0,
    headers: Mapping[str, str] | None = None,
    keep_server_timings: bool = False,
) -> LoadResult:
    """:func:`drive` over real TCP with ``concurrency`` threads sharing one urllib3 connection pool.

    urllib3 on blocking sockets costs the client well under a millisecond per request, where
    ``httpx.AsyncClient`` cost about 3 ms on the 2-core machine (a GET /health/live: 0.7 ms against 4.0 ms
    at p50): on a machine that runs client and service together, a heavy client is measured as service time.
    """
    pool = urllib3.connection_from_url(
        base_url,
        maxsize=concurrency,
        block=True,
        timeout=urllib3.Timeout(total=timeout_s),
        retries=False,
    )
    schedule = _Schedule(max_requests, max_seconds)

    def one_client() -> None:
        while (number := schedule.next_number()) is not None:
            request = plan(number)
            fields = {"file": (request.image.name, request.image.data, request.image.content_type)}
            body, content_type = urllib3.encode_multipart_formdata(fields)
            target = request.path + (f"?{urlencode(dict(request.params))}" if request.params else "")
            request_headers = {**(headers or {}), "Content-Type": content_type}
            timings = None
            sent = time.perf_counter()
            try:
                response = pool.urlopen("POST", target, body=body, headers=request_headers)
                status = str(response.status)
                if keep_server_timings and response.status == 200:
                    timings = json.loads(response.data).get("timings_ms")
            except urllib3.exceptions.NewConnectionError:  # a subclass of ConnectTimeoutError in urllib3 2
                status = TRANSPORT_ERROR_STATUS
            except urllib3.exceptions.TimeoutError:
                status = TIMEOUT_STATUS
            except urllib3.exceptions.HTTPError:
                status = TRANSPORT_ERROR_STATUS
            schedule.record(request, sent, status, timings)

    clients = [threading.Thread(target=one_client, name=f"load-client-{i}") for i in range(concurrency)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    pool.close()
    return schedule.result(concurrency)


def http_floor(base_url: str, *, requests: int = 200) -> LatencySummary:
    """Latency of ``GET /health/live`` with the load client: what client and HTTP cost without any work."""
    pool = urllib3.connection_from_url(base_url, maxsize=1, retries=False)
    latencies = []
    for _ in range(requests):
        sent = time.perf_counter()
        pool.urlopen("GET", "/health/live")
        latencies.append(time.perf_counter() - sent)
    pool.close()
    return LatencySummary.of(latencies)
