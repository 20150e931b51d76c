"""The soak: many requests against one service process, its memory read as they go.

Starts ``python -m service`` (or uses one already running, given its URL and process id), sends a warm-up,
then ``requests`` uploads in chunks, reading the process's resident memory after each chunk. Every
``gradcam_every``-th request asks for Grad-CAM and every ``bad_every``-th sends a truncated image (which must
be refused with 400), so the error paths and the Keras twin are soaked too. Reports the RSS after the warm-up
and at the end (growth in per cent), every status, and the requests whose status was not the expected one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

from bench.driver import LoadResult, PlannedRequest, drive_http
from bench.errors import BenchError
from bench.images import ImageFile, load_images
from bench.load import check_loopback, machine
from bench.process import ServiceProcess, mib, rss_bytes, running_service
from bench.stats import LatencySummary, throughput

GROWTH_GOAL_PERCENT: Final = 5.0


@dataclass(frozen=True)
class SoakConfig:
    """How long to soak and against what."""

    images: Path
    out: Path
    repository: Path | None = Path("models")  # start a service on it, unless ``url`` is given
    url: str | None = None
    pid: int | None = None
    model: str | None = None
    requests: int = 10_000
    concurrency: int = 4
    warmup: int = 1000
    chunk: int = 500
    gradcam_every: int = 50  # 0: never
    bad_every: int = 100  # 0: never
    image_limit: int = 256
    max_seconds: float = 3600.0


def soak_plan(
    images: Sequence[ImageFile], *, model: str | None, gradcam_every: int, bad_every: int, offset: int = 0
) -> Callable[[int], PlannedRequest]:
    """Request ``number`` (counted from ``offset``): a truncated image every ``bad_every``, Grad-CAM every
    ``gradcam_every``, otherwise a plain prediction."""

    def plan(number: int) -> PlannedRequest:
        index = number + offset
        image = images[index % len(images)]
        params = {} if model is None else {"model": model}
        if bad_every and index % bad_every == bad_every - 1:
            broken = ImageFile(
                f"truncated-{image.name}", image.data[: len(image.data) // 3], image.content_type
            )
            return PlannedRequest(image=broken, params=params, expected=400)
        if gradcam_every and index % gradcam_every == gradcam_every - 1:
            return PlannedRequest(image=image, params={**params, "gradcam": "true"})
        return PlannedRequest(image=image, params={**params, "gradcam": "false"})

    return plan


def _warmup_request(plan: Callable[[int], PlannedRequest], number: int, *, gradcam: bool) -> PlannedRequest:
    """The warm-up's requests: the soak's mix, but the first asks for Grad-CAM (the Keras twin loads then)."""
    request = plan(number)
    if number == 0 and gradcam:
        return PlannedRequest(image=request.image, params={**request.params, "gradcam": "true"})
    return request


@contextmanager
def _target(config: SoakConfig) -> Iterator[ServiceProcess]:
    if config.url is not None:
        check_loopback(config.url)
        if config.pid is None:
            raise BenchError(
                "With --url, give --pid (the service's process id) so that its memory can be read."
            )
        yield ServiceProcess(url=config.url, pid=config.pid, log=Path("/dev/null"))
        return
    if config.repository is None:
        raise BenchError("Give --repository (a service is started on it) or --url and --pid.")
    env = {"MRI_DEFAULT_MODEL": config.model} if config.model else {}
    with running_service(config.repository, env) as process:
        yield process


def run_soak(config: SoakConfig) -> dict[str, Any]:
    """Soak one service process; print progress; write soak.json; the report."""
    images = load_images(config.images, config.image_limit)
    started = datetime.now(UTC)
    with _target(config) as process:
        report = _soak(config, images, process)
    report.update(
        {
            "kind": "soak",
            "started_utc": started.isoformat(timespec="seconds"),
            "images": {"folder": str(config.images), "count": len(images)},
            "machine": machine(),
        }
    )
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    print(render_summary(report), flush=True)
    return report


def _soak(config: SoakConfig, images: Sequence[ImageFile], process: ServiceProcess) -> dict[str, Any]:
    rss_ready = rss_bytes(process.pid)
    rss_samples: list[dict[str, Any]] = []
    results: list[LoadResult] = []
    plan = soak_plan(
        images, model=config.model, gradcam_every=config.gradcam_every, bad_every=config.bad_every
    )
    warmup = drive_http(
        process.url,
        partial(_warmup_request, plan, gradcam=config.gradcam_every > 0),
        concurrency=config.concurrency,
        max_requests=config.warmup,
        max_seconds=config.max_seconds,
        timeout_s=300,
    )
    rss_start = rss_bytes(process.pid)
    print(f"warm-up: {len(warmup.samples)} requests; RSS {mib(rss_start)} MiB", flush=True)
    sent = 0
    elapsed = 0.0
    while sent < config.requests and elapsed < config.max_seconds:
        count = min(config.chunk, config.requests - sent)
        plan = soak_plan(
            images,
            model=config.model,
            gradcam_every=config.gradcam_every,
            bad_every=config.bad_every,
            offset=sent,
        )
        result = drive_http(
            process.url,
            plan,
            concurrency=config.concurrency,
            max_requests=count,
            max_seconds=config.max_seconds - elapsed,
            timeout_s=300,
        )
        results.append(result)
        sent += len(result.samples)
        elapsed += result.wall_s
        rss = rss_bytes(process.pid)
        rss_samples.append({"requests": sent, "elapsed_s": round(elapsed, 1), "rss_mib": mib(rss)})
        print(
            f"{sent:>6} requests  {elapsed:7.1f} s  RSS {mib(rss)} MiB  unexpected {result.unexpected}",
            flush=True,
        )
    rss_end = rss_bytes(process.pid)
    samples = [sample for result in results for sample in result.samples]
    statuses = dict(sorted(Counter(s.status for s in samples).items()))
    unexpected = dict(sorted(Counter(s.status for s in samples if not s.expected).items()))
    ok = [s.latency_s for s in samples if s.status == "200"]
    growth = (rss_end - rss_start) / rss_start * 100.0
    return {
        "url": process.url,
        "settings": {
            "requests": config.requests,
            "concurrency": config.concurrency,
            "warmup": config.warmup,
            "gradcam_every": config.gradcam_every,
            "bad_every": config.bad_every,
            "model": config.model,
        },
        "requests": len(samples),
        "wall_s": round(elapsed, 1),
        "throughput_rps": throughput(len(samples), elapsed),
        "statuses": statuses,
        "unexpected": unexpected,
        "latency_ok": LatencySummary.of(ok).as_dict() if ok else None,
        "rss_mib": {
            "ready": mib(rss_ready),
            "start": mib(rss_start),
            "end": mib(rss_end),
            "growth_percent": round(growth, 2),
            "growth_goal_percent": GROWTH_GOAL_PERCENT,
            "met": growth < GROWTH_GOAL_PERCENT,
            "samples": rss_samples,
        },
    }


def render_summary(report: dict[str, Any]) -> str:
    rss = report["rss_mib"]
    return (
        f"soak: {report['requests']} requests in {report['wall_s']} s ({report['throughput_rps']} /s) at "
        f"concurrency {report['settings']['concurrency']}; statuses {report['statuses']}; unexpected "
        f"{report['unexpected'] or 'none'}\n"
        f"RSS: {rss['ready']} MiB when ready, {rss['start']} MiB after the warm-up, "
        f"{rss['end']} MiB at the end: "
        f"growth {rss['growth_percent']} % (goal < {rss['growth_goal_percent']:g} %: "
        f"{'met' if rss['met'] else 'NOT met'})"
    )
