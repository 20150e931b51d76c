"""``python -m bench.oip``: the Open Inference Protocol's overhead against ``/predict``.

The same real images go to a service through ``POST /predict`` (multipart) and through
``POST /v2/models/{name}/infer`` as the protocol's clients send them: ``oip-binary`` is tritonclient's
default (the files as raw BYTES after the JSON header, the outputs in binary), ``oip-json`` the plain JSON
form (the files in base64, the outputs in JSON) and ``oip-batch`` ``--batch`` files in one request (one ONNX
Runtime run; its throughput counts images). Each mode runs at each concurrency after a warm-up; the bodies
are built before the clock starts and the client is urllib3 on threads (as in
:func:`bench.driver.drive_http`), so that the figures are the server's. Prints a table and writes
``oip.json``. Without ``--url`` a service is started on ``--repository``.
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import urllib3

from bench.errors import BenchError
from bench.images import ImageFile, load_images
from bench.process import running_service
from bench.stats import LatencySummary, throughput

MODES: Final = ("predict", "oip-binary", "oip-json", "oip-batch")


@dataclass(frozen=True)
class Body:
    """One prepared request: its path, headers, body and the images it carries."""

    path: str
    headers: dict[str, str]
    body: bytes
    images: int


def _predict_body(model: str, image: ImageFile) -> Body:
    body, content_type = urllib3.encode_multipart_formdata(
        {"file": (image.name, image.data, image.content_type)}
    )
    return Body(f"/predict?model={model}", {"Content-Type": content_type}, body, 1)


def _binary_body(model: str, images: Sequence[ImageFile]) -> Body:
    packed = b"".join(struct.pack("<I", len(image.data)) + image.data for image in images)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [len(images)],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(packed)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return Body(f"/v2/models/{model}/infer", headers, header + packed, len(images))


def _json_body(model: str, image: ImageFile) -> Body:
    data = [base64.b64encode(image.data).decode("ascii")]
    document = {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": data}]}
    body = json.dumps(document).encode()
    return Body(f"/v2/models/{model}/infer", {"Content-Type": "application/json"}, body, 1)


def prepare(mode: str, model: str, images: Sequence[ImageFile], batch: int) -> list[Body]:
    """The request bodies of ``mode``, built once before any measurement."""
    if mode == "predict":
        return [_predict_body(model, image) for image in images]
    if mode == "oip-binary":
        return [_binary_body(model, [image]) for image in images]
    if mode == "oip-json":
        return [_json_body(model, image) for image in images]
    groups = [images[start : start + batch] for start in range(0, len(images) - batch + 1, batch)]
    return [_binary_body(model, group) for group in groups]


def drive(url: str, bodies: Sequence[Body], *, concurrency: int, requests: int) -> dict[str, Any]:
    """``requests`` POSTs cycling through ``bodies`` from ``concurrency`` threads; latency and throughput."""
    pool = urllib3.connection_from_url(url, maxsize=concurrency, block=True, retries=False, timeout=120.0)
    lock = threading.Lock()
    counter = iter(range(requests))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    images = 0

    def client() -> None:
        nonlocal images
        while True:
            with lock:
                number = next(counter, None)
            if number is None:
                return
            body = bodies[number % len(bodies)]
            sent = time.perf_counter()
            response = pool.urlopen("POST", body.path, body=body.body, headers=body.headers)
            latency = time.perf_counter() - sent
            with lock:
                statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
                if response.status == 200:
                    latencies.append(latency)
                    images += body.images

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    pool.close()
    latency = LatencySummary.of(latencies).as_dict() if latencies else None
    return {
        "concurrency": concurrency,
        "requests": requests,
        "statuses": statuses,
        "wall_s": round(wall_s, 3),
        "throughput_rps": throughput(len(latencies), wall_s),
        "images_per_s": throughput(images, wall_s),
        "latency": latency,
    }


def run(
    url: str,
    model: str,
    images: Sequence[ImageFile],
    *,
    modes: Sequence[str],
    concurrencies: Sequence[int],
    requests: int,
    warmup: int,
    batch: int,
    report: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Every mode at every concurrency; one result row each."""
    rows = []
    for mode in modes:
        bodies = prepare(mode, model, images, batch)
        if not bodies:
            raise BenchError(f"Fewer than --batch {batch} images: nothing to send in mode {mode}.")
        drive(url, bodies, concurrency=1, requests=warmup)
        for concurrency in concurrencies:
            count = requests if mode != "oip-batch" else max(1, requests // batch)
            row = {"mode": mode, **drive(url, bodies, concurrency=concurrency, requests=count)}
            rows.append(row)
            report(_line(row))
    return rows


def _line(row: dict[str, Any]) -> str:
    latency = row["latency"] or {}
    return (
        f"{row['mode']:<11} c={row['concurrency']:<3} p50 {latency.get('p50_ms', float('nan')):8.1f} ms  "
        f"p99 {latency.get('p99_ms', float('nan')):8.1f} ms  {row['throughput_rps']:7.1f} req/s  "
        f"{row['images_per_s']:7.1f} img/s  {row['statuses']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.oip", description=__doc__)
    parser.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    parser.add_argument("--url", help="a running service; default: start one on --repository")
    parser.add_argument("--repository", type=Path, default=Path("models"), help="default: %(default)s")
    parser.add_argument("--model", default="sartaj-4class", help="default: %(default)s")
    parser.add_argument("--concurrency", default="1,8", help="levels, e.g. 1,8 (default: %(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="default: %(default)s")
    parser.add_argument("--requests", type=int, default=128, help="requests per level (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=8, help="unmeasured requests per mode")
    parser.add_argument("--batch", type=int, default=8, help="images per request in oip-batch")
    parser.add_argument("--limit", type=int, default=64, help="images used (default: %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench/oip/oip.json"), help="default: %(default)s"
    )
    args = parser.parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not modes or any(mode not in MODES for mode in modes):
        parser.error(f"--modes takes some of {', '.join(MODES)}")
    try:
        concurrencies = [int(part) for part in args.concurrency.split(",")]
    except ValueError:
        parser.error("--concurrency takes integers, e.g. 1,8")
    if any(not 1 <= level <= 256 for level in concurrencies) or not 1 <= args.batch <= 64:
        parser.error("concurrency levels are 1 to 256, --batch 1 to 64")
    try:
        images = load_images(args.images, args.limit)

        def measure(url: str) -> list[dict[str, Any]]:
            return run(
                url, args.model, images, modes=modes, concurrencies=concurrencies, requests=args.requests,
                warmup=args.warmup, batch=args.batch,
            )  # fmt: skip

        if args.url:
            rows = measure(args.url)
        else:
            with running_service(args.repository) as service:
                rows = measure(service.url)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"model": args.model, "images": len(images), "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
