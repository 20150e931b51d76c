"""Slow, silent and greedy clients against a real ``python -m service``: each is cut off in time with JSON.

The service runs with short limits (header 1 s, body 2 s, 6 connections) so that the tests are quick; the
defaults are in README. Raw sockets play the clients: a real HTTP client library would not misbehave.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import running_service

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def guarded(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("slow-clients") / "stderr.log"
    settings = {
        "MRI_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "MRI_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "MRI_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "MRI_KEEP_ALIVE_S": "1",
    }
    with running_service(model_repository, log, settings) as base:
        yield base, log


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    return connection


def _read_answer(connection: socket.socket, wait_s: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``wait_s`` pass)."""
    connection.settimeout(wait_s)
    chunks = []
    try:
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def _parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body)


def _still_ready(base: str) -> None:
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/health/ready").status_code == 200


@pytest.mark.slow
def test_headers_that_trickle_in_get_408_and_a_closed_connection(guarded: tuple[str, Path]) -> None:
    base, _ = guarded
    connection = _connect(base)
    connection.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\n")
    started = time.monotonic()
    closed_after = None
    for _ in range(40):  # one header line every 0.1 s: each byte would restart uvicorn's own timer
        if select.select([connection], [], [], 0)[0]:
            break
        try:
            connection.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
        time.sleep(0.1)
    answer = _read_answer(connection)
    closed_after = time.monotonic() - started
    status, headers, body = _parse(answer)
    assert status == 408 and headers["connection"] == "close"
    assert body == {
        "error": "The request line and headers did not arrive within 1 s; the connection is closed.",
        "error_type": "request_timeout",
    }
    assert closed_after < HEADER_TIMEOUT_S + 2
    _still_ready(base)


@pytest.mark.slow
def test_a_silent_connection_is_closed(guarded: tuple[str, Path]) -> None:
    base, _ = guarded
    connection = _connect(base)
    started = time.monotonic()
    assert _read_answer(connection) == b""  # closed without a word: nothing was asked
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 2


@pytest.mark.slow
def test_an_idle_keep_alive_connection_is_closed_after_its_answer(guarded: tuple[str, Path]) -> None:
    base, _ = guarded
    connection = _connect(base)
    connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
    started = time.monotonic()
    answer = _read_answer(connection)
    assert answer.startswith(b"HTTP/1.1 200") and b'{"status":"alive"}' in answer
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 2  # the answer, then the close


@pytest.mark.slow
def test_a_body_that_trickles_in_gets_408(guarded: tuple[str, Path]) -> None:
    base, _ = guarded
    connection = _connect(base)
    connection.sendall(
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=XX\r\n"
        b"Content-Length: 100000\r\n\r\n--XX\r\n"
    )
    started = time.monotonic()
    for _ in range(60):  # one byte every 0.1 s: the body would take hours
        if select.select([connection], [], [], 0)[0]:
            break
        try:
            connection.sendall(b"a")
        except OSError:
            break
        time.sleep(0.1)
    status, headers, body = _parse(_read_answer(connection))
    assert time.monotonic() - started < BODY_TIMEOUT_S + 2
    assert status == 408 and headers["connection"] == "close" and "x-request-id" in headers
    assert body == {
        "error": "The request body did not arrive within 2 s; send it faster or send a smaller image.",
        "error_type": "request_timeout",
    }
    _still_ready(base)


@pytest.mark.slow
def test_connections_past_the_cap_get_503_with_retry_after(guarded: tuple[str, Path]) -> None:
    base, log = guarded
    held = [_connect(base) for _ in range(MAX_CONNECTIONS + 3)]
    try:
        refused = []
        for connection in held:
            connection.settimeout(0.5)
            try:
                answer = connection.recv(4096)
            except TimeoutError:
                continue
            if answer:
                refused.append(_parse(answer + _read_answer(connection, 2)))
        assert len(refused) == 3
        for status, headers, body in refused:
            assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
            assert body["error_type"] == "overloaded" and "limit of 6 open connections" in str(body["error"])
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.2)  # the server notices the closes
    _still_ready(base)
    assert "refused a connection over the limit of 6" in log.read_text()


@pytest.mark.slow
def test_a_long_model_name_is_not_echoed_whole(guarded: tuple[str, Path]) -> None:
    base, _ = guarded
    name = "m" * 8000
    with httpx.Client(base_url=base, timeout=10) as client:
        answer = client.post("/predict", params={"model": name}, files={"file": ("x.png", b"\x89PNG")})
    assert answer.status_code == 404
    body = answer.json()
    assert body["error_type"] == "unknown_model"
    assert len(body["error"]) < 300 and "m" * 64 in body["error"] and "m" * 65 not in body["error"]
