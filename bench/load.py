"""The load script: drive a running service with real images at several concurrency levels.

For every model (all that the service serves, or those named), with and without Grad-CAM, and at each
concurrency: a warm-up (not measured), then requests until ``requests`` were sent or ``duration_s`` passed.
Prints a table of p50/p95/p99/mean latency, throughput and statuses; writes ``load.json`` and ``load.png``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from bench.driver import PlannedRequest, drive_http
from bench.errors import BenchError
from bench.images import ImageFile, load_images
from bench.plot import plot_load

MAX_REQUESTS_PER_LEVEL: Final = 100_000
MAX_SECONDS_PER_LEVEL: Final = 3600.0
MAX_CONCURRENCY: Final = 256


@dataclass(frozen=True)
class LoadConfig:
    """What to measure and where to write it."""

    url: str
    images: Path
    out: Path
    concurrencies: tuple[int, ...] = (1, 2, 4, 8)
    gradcam: tuple[bool, ...] = (False, True)
    models: tuple[str, ...] = ()  # empty: every model the service serves
    requests: int = 200
    duration_s: float = 60.0
    warmup: int = 10
    timeout_s: float = 60.0
    image_limit: int = 64
    api_key: str | None = None
    allow_remote: bool = False


def check_loopback(url: str) -> None:
    """Refuse a URL whose host is not this machine: a load test is not to be aimed at others by mistake."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"The URL {url!r} is not an http(s) URL such as http://127.0.0.1:8000.")
    host = parts.hostname
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise BenchError(
            f"The host {host} is not loopback; the load script only drives a service on this machine "
            "unless --allow-remote is given (and you are allowed to load that host)."
        )


def run_load_test(config: LoadConfig) -> dict[str, Any]:
    """Measure every (model, Grad-CAM, concurrency) level; write load.json and load.png; the report."""
    if not config.allow_remote:
        check_loopback(config.url)
    images = load_images(config.images, config.image_limit)
    headers = {"X-API-Key": config.api_key} if config.api_key else {}
    served = _served_models(config.url, headers, config.timeout_s)
    models = list(config.models) or served
    unknown = sorted(set(models) - set(served))
    if unknown:
        raise BenchError(f"The service does not serve {', '.join(unknown)}; it serves {', '.join(served)}.")
    started = datetime.now(UTC)
    print(HEADER, flush=True)
    rows = _measure(config, images, models, headers)
    report = {
        "kind": "load",
        "started_utc": started.isoformat(timespec="seconds"),
        "url": config.url,
        "images": {"folder": str(config.images), "count": len(images)},
        "settings": {
            "concurrencies": list(config.concurrencies),
            "gradcam": list(config.gradcam),
            "requests_per_level": config.requests,
            "max_seconds_per_level": config.duration_s,
            "warmup_per_level": config.warmup,
            "timeout_s": config.timeout_s,
        },
        "machine": machine(),
        "rows": rows,
    }
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_load(rows, config.out / "load.png", title=f"Load on {config.url} ({len(images)} real images)")
    return report


def _served_models(url: str, headers: dict[str, str], timeout_s: float) -> list[str]:
    try:
        ready = httpx.get(f"{url}/health/ready", headers=headers, timeout=timeout_s)
        listing = httpx.get(f"{url}/models", headers=headers, timeout=timeout_s)
    except httpx.TransportError as error:
        raise BenchError(
            f"No service answers at {url} ({error}); start it with `python -m service`."
        ) from None
    if ready.status_code != 200:
        raise BenchError(f"The service at {url} is not ready (/health/ready answered {ready.status_code}).")
    if listing.status_code != 200:
        raise BenchError(f"GET {url}/models answered {listing.status_code}: {listing.text[:200]}")
    return [model["name"] for model in listing.json()["models"]]


def _measure(
    config: LoadConfig, images: list[ImageFile], models: list[str], headers: dict[str, str]
) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        for gradcam in config.gradcam:
            params = {"model": model, "gradcam": "true" if gradcam else "false"}

            def plan(number: int, params: dict[str, str] = params) -> PlannedRequest:
                return PlannedRequest(image=images[number % len(images)], params=params)

            for concurrency in config.concurrencies:
                level = partial(
                    drive_http,
                    config.url,
                    plan,
                    concurrency=concurrency,
                    max_seconds=config.duration_s,
                    timeout_s=config.timeout_s,
                    headers=headers,
                )
                if config.warmup:
                    level(max_requests=config.warmup)
                result = level(max_requests=config.requests)
                row = {"model": model, "gradcam": gradcam, **result.summary()}
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


HEADER: Final = (
    f"{'model':<18} {'gradcam':>7} {'conc':>4} {'sent':>6} {'ok':>6} {'p50 ms':>9} {'p95 ms':>9} "
    f"{'p99 ms':>9} {'mean ms':>9} {'req/s':>8}  statuses"
)


def format_row(row: dict[str, Any]) -> str:
    """One line of the table (print :data:`HEADER` first)."""
    latency = row["latency"] or {}

    def cell(key: str) -> str:
        value = latency.get(key)
        return f"{value:9.1f}" if value is not None else f"{'-':>9}"

    statuses = " ".join(f"{status}:{count}" for status, count in row["statuses"].items())
    return (
        f"{row['model'][:18]:<18} {'on' if row['gradcam'] else 'off':>7} {row['concurrency']:>4} "
        f"{row['requests']:>6} {row['ok']:>6} {cell('p50_ms')} {cell('p95_ms')} {cell('p99_ms')} "
        f"{cell('mean_ms')} {row['throughput_rps']:>8.2f}  {statuses}"
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
