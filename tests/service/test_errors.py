"""Every bad input is a 4xx JSON error with a sentence, never a 500, and the service stays ready after."""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

import service.inference
from service.dicom import NO_PIXEL_DATA_MESSAGE

GIF_1X1 = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"  # noqa: E501
HTML = b"<!DOCTYPE html><html><head><title>scan</title></head><body><img src='x.jpg'></body></html>"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _forged_png(width: int, height: int) -> bytes:
    """A PNG header declaring width x height, followed by a stub of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"\x00garbage")[:12]


def _dicom_without_pixels() -> bytes:
    path = get_testdata_file("MR_small.dcm")
    assert path is not None
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def assert_error(response: Any, status: int, error_type: str) -> str:
    """Exact status and body shape; returns the sentence."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"}
    assert body["error_type"] == error_type
    sentence = body["error"]
    assert sentence[:1].isupper() and sentence.endswith("."), sentence
    assert response.headers["x-request-id"]
    return str(sentence)


def assert_still_healthy(client: TestClient) -> None:
    assert client.get("/health/ready").status_code == 200
    assert 'error_type="internal_error"' not in client.get("/metrics").text  # the catch-all never ran


def _post(client: TestClient, name: str, data: bytes, content_type: str = "image/jpeg", **params: str) -> Any:
    return client.post("/predict", files={"file": (name, data, content_type)}, params=params)


@pytest.mark.parametrize(
    ("data", "name", "content_type", "status", "error_type", "words"),
    [
        (b"", "empty.jpg", "image/jpeg", 400, "invalid_image", "empty"),
        (
            b"patient notes: nothing to see\n",
            "notes.txt",
            "text/plain",
            400,
            "invalid_image",
            "not a recognised",
        ),
        (HTML, "scan.html", "text/html", 400, "invalid_image", "not a recognised"),
        (_forged_png(0, 0), "zero.png", "image/png", 400, "invalid_image", "0 x 0"),
        (_forged_png(1, 1), "one.png", "image/png", 400, "invalid_image", "too small"),
        (_forged_png(60000, 60000), "bomb.png", "image/png", 413, "image_too_large", "60000 x 60000"),
        (GIF_1X1, "scan.gif", "image/gif", 415, "unsupported_media_type", "GIF"),
        (
            _dicom_without_pixels(),
            "slice.dcm",
            "application/dicom",
            400,
            "invalid_image",
            NO_PIXEL_DATA_MESSAGE,
        ),
        (b"not dicom at all", "slice.dcm", "application/dicom", 400, "invalid_image", "DICOM"),
    ],
    ids=[
        "empty",
        "text",
        "html",
        "zero-size",
        "1x1",
        "forged-huge-header",
        "gif",
        "dicom-no-pixels",
        "not-dicom",
    ],
)
def test_bad_upload_is_a_clear_4xx(
    client: TestClient, data: bytes, name: str, content_type: str, status: int, error_type: str, words: str
) -> None:
    sentence = assert_error(_post(client, name, data, content_type), status, error_type)
    assert words in sentence
    assert_still_healthy(client)


@pytest.mark.realdata
def test_truncated_jpeg(client: TestClient, data_root: Path) -> None:
    data = (data_root / "sartaj-brain-tumor-mri/Testing/pituitary_tumor/image(1).jpg").read_bytes()
    sentence = assert_error(_post(client, "cut.jpg", data[: len(data) // 2]), 400, "invalid_image")
    assert "truncated" in sentence
    assert_still_healthy(client)


@pytest.mark.realdata
def test_png_with_a_bad_crc(client: TestClient, data_root: Path) -> None:
    data = bytearray((data_root / "br35h/yes/y355.jpg").read_bytes())  # PNG data under a .jpg name
    data[data.index(b"IDAT") + 100] ^= 0xFF
    sentence = assert_error(_post(client, "y355.jpg", bytes(data)), 400, "invalid_image")
    assert "IDAT" in sentence
    assert_still_healthy(client)


def test_missing_file_field_is_422_naming_the_field(client: TestClient, brain_png: bytes) -> None:
    response = client.post("/predict", files={"image": ("x.png", brain_png, "image/png")})
    assert "'file'" in assert_error(response, 422, "validation_error")
    assert "'file'" in assert_error(client.post("/predict"), 422, "validation_error")  # no body at all
    assert_still_healthy(client)


def test_file_sent_as_text_field_is_422(client: TestClient) -> None:
    response = client.post("/predict", files={"file": (None, b"iVBORw0KGgo=")})  # a part without a filename
    assert "must be a file" in assert_error(response, 422, "validation_error")


def test_raw_image_body_instead_of_multipart_is_415(client: TestClient, brain_png: bytes) -> None:
    response = client.post("/predict", content=brain_png, headers={"content-type": "image/png"})
    assert "multipart/form-data" in assert_error(response, 415, "unsupported_media_type")


def test_unknown_model_is_404_listing_the_models(client: TestClient, brain_png: bytes) -> None:
    sentence = assert_error(_post(client, "x.png", brain_png, model="resnet"), 404, "unknown_model")
    assert "'resnet'" in sentence and "tiny-4class" in sentence and "tiny-binary" in sentence
    assert_error(client.get("/models/resnet"), 404, "unknown_model")
    assert_still_healthy(client)


@pytest.mark.parametrize("value", ["maybe", "2", "yes please"])
def test_non_boolean_gradcam_is_422(client: TestClient, brain_png: bytes, value: str) -> None:
    sentence = assert_error(_post(client, "x.png", brain_png, gradcam=value), 422, "validation_error")
    assert "'gradcam'" in sentence and repr(value) in sentence
    assert_still_healthy(client)


def test_unknown_gradcam_class_is_422_with_the_valid_names(client: TestClient, brain_png: bytes) -> None:
    sentence = assert_error(
        _post(client, "x.png", brain_png, gradcam_class="tumour"), 422, "validation_error"
    )
    assert "glioma, meningioma, no_tumor, pituitary" in sentence
    contradiction = _post(client, "x.png", brain_png, gradcam="false", gradcam_class="glioma")
    assert "gradcam=false" in assert_error(contradiction, 422, "validation_error")


def test_malformed_model_name_in_the_path_is_422(client: TestClient) -> None:
    sentence = assert_error(client.get("/models/bad name!"), 422, "validation_error")
    assert "path parameter 'name'" in sentence and "'bad name!'" in sentence


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    assert "/predcit" in assert_error(client.post("/predcit"), 404, "not_found")
    response = client.get("/predict")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_upload_over_the_byte_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=4096)
    noise = np.random.default_rng(0).integers(0, 255, 200_000, dtype=np.uint8).tobytes()
    sentence = assert_error(_post(client, "big.png", noise), 413, "upload_too_large")
    assert "4,096 bytes" in sentence
    assert_still_healthy(client)


async def _call_asgi(app: FastAPI, headers: list[tuple[bytes, bytes]], chunks: int) -> tuple[int, int, bytes]:
    """POST /predict, a file part streamed in up to ``chunks`` 64 KiB chunks; (status, chunks read, body)."""
    read = 0
    sent: list[dict[str, Any]] = []
    part_head = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        chunk = (part_head if read == 1 else b"") + b"\0" * 65536
        return {"type": "http.request", "body": chunk, "more_body": read < chunks}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=xyz"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], read, body


def test_huge_declared_upload_is_refused_before_reading_a_byte(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_upload_bytes=1_000_000)
    assert client.portal is not None
    headers = [(b"content-length", b"10000000000")]  # 10 GB declared
    status, read, body = client.portal.call(_call_asgi, client.app, headers, 1_000_000)
    assert (status, read) == (413, 0)
    assert b'"error_type":"upload_too_large"' in body and b"10,000,000,000 bytes" in body


def test_huge_chunked_upload_is_cut_off_at_the_limit(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=1_000_000)
    assert client.portal is not None
    status, read, body = client.portal.call(_call_asgi, client.app, [], 1_000_000)  # 64 GB, chunked
    assert status == 413 and b'"error_type":"upload_too_large"' in body
    assert read <= (1_000_000 + 64 * 1024) // 65536 + 1  # stopped just past the limit, not at the end
    assert_still_healthy(client)


def test_unexpected_failure_is_a_generic_logged_500(
    make_client: Callable[..., TestClient],
    brain_png: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail /srv/models/x")

    client = make_client(raise_server_exceptions=False)
    monkeypatch.setattr(service.inference, "predict_upload", explode)
    with caplog.at_level(logging.ERROR):
        response = _post(client, "x.png", brain_png)
        request_id = response.headers["x-request-id"]
        sentence = assert_error(response, 500, "internal_error")
    assert 'mri_request_errors_total{error_type="internal_error"} 1.0' in client.get("/metrics").text
    assert "secret" not in sentence and request_id in sentence
    logged = [r for r in caplog.records if r.name == "service.errors"]
    assert logged and logged[0].exc_info is not None and "secret detail" in str(logged[0].exc_info[1])


def test_error_types_are_one_closed_list_with_one_status_each() -> None:
    import json
    import re
    from pathlib import Path

    import service.hospital.dicomweb  # noqa: F401  (its errors are subclasses too)
    from service.errors import ERROR_STATUS, ErrorType, ServiceError

    assert set(ERROR_STATUS) == set(ErrorType)
    pending, seen = [ServiceError], []
    while pending:
        kind = pending.pop()
        seen.append(kind)
        pending += kind.__subclasses__()
        assert kind.error_type in ErrorType, kind
    assert len(seen) > 10
    root = Path(__file__).resolve().parents[2]
    # no error_type written as a bare string anywhere in the service
    literals = set()
    for path in (root / "service").rglob("*.py"):
        literals |= set(
            re.findall(r'error_type["\']?\s*[:=]\s*"([a-z_]+)"', path.read_text(encoding="utf-8"))
        )
    assert literals <= {member.value for member in ErrorType}, literals - {m.value for m in ErrorType}
    # the contract lists exactly this vocabulary, and the service's page names every member
    schema = json.loads((root / "openapi.json").read_text(encoding="utf-8"))
    enum = schema["components"]["schemas"]["ErrorType"]["enum"]
    assert sorted(enum) == sorted(member.value for member in ErrorType)
    readme = (root / "docs" / "service.md").read_text(encoding="utf-8")
    assert [m.value for m in ErrorType if f"`{m.value}`" not in readme] == []
