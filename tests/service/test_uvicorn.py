"""`python -m service` as a real uvicorn process on loopback: ready, predicts, counts, refuses, stops."""

from __future__ import annotations

import asyncio
import json
import select
import socket
from pathlib import Path

import httpx
import pytest

SLICES = [
    "sartaj-brain-tumor-mri/Testing/glioma_tumor/image(1).jpg",
    "br35h/yes/y355.jpg",  # PNG data under a .jpg name
    "sartaj-brain-tumor-mri/Training/glioma_tumor/gg (1).jpg",
]


@pytest.mark.realdata
@pytest.mark.slow
def test_real_predictions_and_metrics(server: tuple[str, Path], data_root: Path) -> None:
    base, log = server
    with httpx.Client(base_url=base, timeout=60) as client:
        assert client.get("/health/live").json() == {"status": "alive"}
        for relative in SLICES:
            files = {"file": (Path(relative).name, (data_root / relative).read_bytes(), "image/jpeg")}
            response = client.post("/predict", files=files, headers={"X-Request-ID": "uvicorn-test"})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["label"] in body["probabilities"] and body["model"]["name"] == "tiny-4class"
            assert response.headers["x-request-id"] == "uvicorn-test"
        assert client.post("/predict", files={"file": ("x.txt", b"hello")}).status_code == 400
        metrics = client.get("/metrics").text
    assert 'mri_request_duration_seconds_count{route="/predict",status="200"} 3.0' in metrics
    assert 'mri_request_errors_total{error_type="invalid_image"} 1.0' in metrics
    assert (
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("mri_predictions_total{")
        )
        == 3.0
    )
    access = [json.loads(line) for line in log.read_text().splitlines() if '"service.access"' in line]
    assert any(
        e["route"] == "/predict" and e["status"] == 200 and e["request_id"] == "uvicorn-test" for e in access
    )


@pytest.mark.realdata
@pytest.mark.slow
def test_fifty_concurrent_requests_over_http(server: tuple[str, Path], data_root: Path) -> None:
    base, _ = server
    data = (data_root / SLICES[0]).read_bytes()

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            calls = [client.post("/predict", files={"file": (f"s{i}.jpg", data)}) for i in range(50)]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 50
    assert len({r.json()["label"] for r in responses}) == 1


def _raw_request(base: str, head: bytes, body_chunks: int) -> bytes:
    """Send ``head``, then 64 KiB chunks (at most ``body_chunks``) until the server answers; its answer."""
    host, port = base.removeprefix("http://").split(":")
    chunk = b"10000\r\n" + b"\0" * 0x10000 + b"\r\n"  # one HTTP/1.1 chunk of 64 KiB
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head)
        for _ in range(body_chunks):
            if select.select([connection], [], [], 0)[0]:
                break  # the answer is there
            try:
                connection.sendall(chunk)
            except OSError:  # reset or timed out: the server stopped reading
                break
        answer = b""
        try:
            while data := connection.recv(65536):
                answer += data
        except OSError:
            pass
        return answer


def test_oversized_uploads_are_refused_without_being_read(server: tuple[str, Path]) -> None:
    base, log = server
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += b"Content-Type: multipart/form-data; boundary=xyz\r\n"
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    declared = head + b"Content-Length: 10000000000\r\n\r\n" + part  # 10 GB announced, nothing sent
    answer = _raw_request(base, declared, 0)
    assert answer.startswith(b"HTTP/1.1 413") and b'"error_type":"upload_too_large"' in answer
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(part):x}\r\n".encode() + part + b"\r\n"
    answer = _raw_request(base, chunked, 100_000)  # up to 6.5 GB if nobody stopped it
    assert answer.startswith(b"HTTP/1.1 413") and b'"error_type":"upload_too_large"' in answer
    assert httpx.get(f"{base}/health/ready").status_code == 200
    assert '"level": "error"' not in log.read_text()
