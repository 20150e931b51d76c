"""SIGTERM under load against a real ``python -m service``: readiness turns 503 at once, the server keeps
serving for the drain, then stops listening, finishes every request in flight and exits 0 within the grace.

Clients behave as a balancer that follows readiness: they send ``/predict`` with real slices continuously and
stop sending new requests once ``/health/ready`` says 503. A slow upload is in flight across the moment the
listener closes, so the grace period (not the drain) is what completes it. A second service shows the other
bound: a request that outlives the grace is cut, and the process still exits 0 in time.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.process import free_port, wait_for_ready_url

REPO_ROOT = Path(__file__).resolve().parents[2]
SARTAJ_TESTING = Path("sartaj-brain-tumor-mri") / "Testing"
SLICES = [
    "glioma_tumor/image(1).jpg",
    "meningioma_tumor/image(1).jpg",
    "no_tumor/image(1).jpg",
    "pituitary_tumor/image(1).jpg",
]
DRAIN_S = 1.5
GRACE_S = 8.0
CLIENTS = 4
MAX_REQUESTS_PER_CLIENT = 300  # a bound: the clients stop at readiness 503 long before
UPLOAD_S = (
    3.5  # the slow upload: starts 0.5 s before SIGTERM, so it is still sending when the listener closes
)
BOUNDARY = "graceful-shutdown-test-boundary"


@dataclass(frozen=True)
class Call:
    """One request as its client saw it: when it was sent, when it ended, and how."""

    start: float
    end: float
    outcome: int | str  # the HTTP status, or the client's error ("refused" for a refused connection)


@contextlib.contextmanager
def service_process(
    model_repository: Path, log: Path, settings: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A ready ``python -m service`` on a free loopback port and its base URL; the test signals it itself."""
    port = free_port()
    env = {
        **os.environ,
        "MRI_MODEL_REPOSITORY": str(model_repository),
        "MRI_HOST": "127.0.0.1",
        "MRI_PORT": str(port),
        **settings,
    }
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO_ROOT, env=env, stderr=stderr)
    try:
        wait_for_ready_url(process, f"http://127.0.0.1:{port}/health/ready", log, timeout_s=120)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def json_log(log: Path) -> list[dict[str, Any]]:
    """The service's stderr as JSON objects (a line that is not one fails the test). Not conftest's
    ``assert_json_log``: here 503s from readiness, and a request cut at the end of the grace, are expected."""
    entries = []
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"line {number} of the service log is not JSON: {line[:200]!r}")
    return entries


def multipart(name: str, data: bytes) -> bytes:
    """A ``multipart/form-data`` body with ``data`` in the field ``file``."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def send_slowly(
    base: str, body: bytes, seconds: float, chunks: int, stall: bool = False
) -> tuple[int | str, float]:
    """POST ``body`` to /predict in ``chunks`` pieces over ``seconds`` (only the first half with ``stall``,
    then silence); the status (or the error) and when it came."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        size = -(-len(body) // chunks)
        for index in range(chunks if not stall else chunks // 2):
            connection.send(body[index * size : (index + 1) * size])
            time.sleep(seconds / chunks)
        if stall:
            time.sleep(seconds)
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic()
    except (OSError, http.client.HTTPException) as error:
        return f"{type(error).__name__}: {error}", time.monotonic()
    finally:
        connection.close()


def predict_continuously(
    base: str, slices: list[tuple[str, bytes]], index: int, stop: threading.Event, calls: list[Call]
) -> None:
    """One client: /predict with the slices in turn until ``stop`` (a bounded number of requests)."""
    with httpx.Client(base_url=base, timeout=15) as client:
        for number in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                return
            name, data = slices[(index + number) % len(slices)]
            start = time.monotonic()
            try:
                outcome: int | str = client.post(
                    "/predict", files={"file": (name, data, "image/jpeg")}
                ).status_code
            except httpx.HTTPError as error:
                outcome = f"{type(error).__name__}: {error}"
            calls.append(Call(start, time.monotonic(), outcome))


def watch_readiness(base: str, deadline: float, stop: threading.Event, polls: list[Call]) -> None:
    """Poll /health/ready on a new connection every 20 ms: stop the clients at the first 503 (as a balancer
    would), and end at the first refused connection (the listener is closed)."""
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            outcome: int | str = httpx.get(f"{base}/health/ready", timeout=2).status_code
        except httpx.ConnectError:
            polls.append(Call(start, time.monotonic(), "refused"))
            return
        except httpx.HTTPError as error:
            outcome = type(error).__name__
        polls.append(Call(start, time.monotonic(), outcome))
        if outcome == 503:
            stop.set()
        time.sleep(0.02)


def test_sigterm_under_load_drains_finishes_in_flight_requests_and_exits_0(
    model_repository: Path, data_root: Path, tmp_path: Path
) -> None:
    slices = [(path, (data_root / SARTAJ_TESTING / path).read_bytes()) for path in SLICES]
    settings = {"MRI_SHUTDOWN_DRAIN_S": str(DRAIN_S), "MRI_SHUTDOWN_GRACE_S": str(GRACE_S)}
    log = tmp_path / "stderr.log"
    with service_process(model_repository, log, settings) as (process, base):
        stop = threading.Event()
        calls: list[Call] = []
        readiness: list[Call] = []
        upload: list[tuple[int | str, float]] = []
        threads = [
            threading.Thread(target=predict_continuously, args=(base, slices, index, stop, calls))
            for index in range(CLIENTS)
        ]
        threads.append(
            threading.Thread(target=watch_readiness, args=(base, time.monotonic() + 20, stop, readiness))
        )
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        uploader = threading.Thread(
            target=lambda: upload.append(send_slowly(base, multipart(*slices[0]), UPLOAD_S, chunks=10))
        )
        uploader.start()
        time.sleep(0.5)
        terminated = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=DRAIN_S + GRACE_S + 5)
        finally:
            stop.set()
        exited = time.monotonic()
        for thread in [*threads, uploader]:
            thread.join(timeout=20)

    text = log.read_text()
    assert status == 0, text[-3000:]
    entries = json_log(log)
    assert "SIGTERM: not ready; draining for 1.5 s" in text
    predict_5xx = [entry for entry in entries if entry.get("route") == "/predict" and entry["status"] >= 500]
    assert not predict_5xx, predict_5xx[:3]

    # readiness: 200 before the signal; 503 for every poll sent from 0.2 s after it (polls answered slowly
    # under load, so a poll sent just before the signal may already see 503); new connections still accepted
    # and answered 503 during the drain; then refused
    before = [poll.outcome for poll in readiness if poll.end < terminated]
    assert before and set(before) == {200}, readiness
    first_503 = next(poll for poll in readiness if poll.outcome == 503)
    refused = next(poll.start for poll in readiness if poll.outcome == "refused")
    after = {poll.outcome for poll in readiness if poll.start > terminated + 0.2}
    assert after <= {503, "refused", "RemoteProtocolError", "ReadError"}, readiness
    during_drain = [
        poll.outcome for poll in readiness if terminated + 0.2 < poll.start < poll.end < refused - 0.3
    ]
    assert during_drain and set(during_drain) == {503}, readiness
    closed_after = refused - terminated
    assert DRAIN_S - 0.3 < closed_after < DRAIN_S + 1.5, f"listener closed {closed_after:.2f} s after SIGTERM"

    # not one request failed: those in flight at SIGTERM, those sent during the drain, the slow upload
    failed = [call for call in calls if call.outcome != 200]
    assert not failed, f"{len(failed)} of {len(calls)} requests failed: {failed[:5]}"
    in_flight = [call for call in calls if call.start < terminated < call.end]
    assert len(calls) >= 20 and in_flight, (
        f"too little load: {len(calls)} requests, {len(in_flight)} in flight"
    )
    (upload_status, upload_done) = upload[0]
    assert upload_status == 200, upload_status
    assert upload_done > refused, "the slow upload ended before the listener closed: it proved nothing"

    # the process waited for the upload (above), and no longer than the drain plus the grace
    assert exited - terminated < DRAIN_S + GRACE_S, f"exited {exited - terminated:.2f} s after SIGTERM"
    print(
        f"\ngraceful shutdown: {len(calls)} /predict sent, {len(failed)} failed, {len(in_flight)} in flight "
        f"at SIGTERM; first readiness 503 answered {first_503.end - terminated:.3f} s after it; listener "
        f"closed after {closed_after:.2f} s; slow upload answered {upload_done - terminated:.2f} s after "
        f"SIGTERM; exit 0 after {exited - terminated:.2f} s"
    )


def test_a_request_that_outlives_the_grace_is_cut_and_the_process_still_exits_0(
    model_repository: Path, data_root: Path, tmp_path: Path
) -> None:
    grace_s = 1.0
    body = multipart(SLICES[0], (data_root / SARTAJ_TESTING / SLICES[0]).read_bytes())
    log = tmp_path / "stderr.log"
    with service_process(model_repository, log, {"MRI_SHUTDOWN_GRACE_S": str(grace_s)}) as (process, base):
        stalled: list[tuple[int | str, float]] = []
        client = threading.Thread(target=lambda: stalled.append(send_slowly(base, body, 3.0, 4, stall=True)))
        client.start()
        time.sleep(0.5)  # half the body is in: the request is in flight, and will not finish
        terminated = time.monotonic()
        process.send_signal(signal.SIGTERM)  # no drain (the default): the listener closes at once
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/health/live", timeout=2)
        status = process.wait(timeout=grace_s + 10)
        exited = time.monotonic()
        client.join(timeout=10)

    text = log.read_text()
    assert status == 0, text[-3000:]
    json_log(log)
    assert "timeout graceful shutdown exceeded" in text
    assert exited - terminated < grace_s + 2.5, f"exited {exited - terminated:.2f} s after SIGTERM"
    assert stalled and stalled[0][0] != 200, stalled  # cut: no answer, or an error status
    print(
        f"\ngrace exceeded: exit 0 after {exited - terminated:.2f} s (grace {grace_s:g} s); client: {stalled}"
    )
