"""The app's life: start-up, readiness, refusal of bad repositories, models, API keys, access logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from exporter.manifest import load_entry
from service.app import create_app
from service.logging import JsonLogFormatter
from service.model_repository import ModelRepositoryError, ServedModel, SessionConfig, open_model_repository
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "k3y-for-tests-0123456789"


def _start(settings: Settings) -> None:
    with TestClient(create_app(settings)):
        pass


@pytest.fixture
def repository_copy(model_repository: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny repository, to corrupt."""
    return Path(shutil.copytree(model_repository, tmp_path / "models"))


def _assert_one_sentence(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    assert message[:1].isupper() and message.endswith("."), message


@pytest.mark.parametrize(
    ("corrupt", "words"),
    [
        (lambda repo: repo / "absent", "does not exist"),
        (lambda repo: _emptied(repo), "holds no model"),
        (lambda repo: _write(repo / "tiny-binary/manifest.json", "{ not json"), "is not valid JSON"),
        (lambda repo: _append(repo / "tiny-4class/model.onnx"), "it was changed after export"),
        (
            lambda repo: _unlink(repo / "tiny-4class/model.keras"),
            "model.keras listed under 'keras' is missing",
        ),
    ],
    ids=["missing", "empty", "corrupt-manifest", "changed-onnx", "missing-keras"],
)
def test_bad_repository_stops_start_up_with_one_sentence(
    repository_copy: Path, corrupt: Callable[[Path], Path | None], words: str
) -> None:
    path = corrupt(repository_copy) or repository_copy
    with pytest.raises(ModelRepositoryError) as caught:
        _start(Settings(model_repository=path))
    assert words in str(caught.value)
    _assert_one_sentence(str(caught.value))


def _emptied(repo: Path) -> None:
    for entry in repo.iterdir():
        shutil.rmtree(entry)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _append(path: Path) -> None:
    with path.open("ab") as handle:
        handle.write(b"\0")


def _unlink(path: Path) -> None:
    path.unlink()


def test_unknown_default_model_stops_start_up(model_repository: Path) -> None:
    with pytest.raises(ModelRepositoryError, match="MRI_DEFAULT_MODEL names 'resnet'") as caught:
        _start(Settings(model_repository=model_repository, default_model="resnet"))
    _assert_one_sentence(str(caught.value))


def _run_service(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"MRI_MODEL_REPOSITORY": "{tmp}/absent"}, "does not exist"),
        ({"MRI_MODEL_REPOSITORY": "{tmp}"}, "holds no model"),
        ({"MRI_MODEL_REPOSITORY": "{corrupt}"}, "is not valid JSON"),
        ({"MRI_PORT": "70000", "MRI_API_KEYS": "short"}, "MRI_PORT is invalid"),
    ],
    ids=["missing", "empty", "corrupt", "bad-settings"],
)
def test_python_m_service_exits_2_with_one_sentence(
    tmp_path: Path, repository_copy: Path, env: dict[str, str], words: str
) -> None:
    _write(repository_copy / "tiny-binary/manifest.json", "{ not json")
    empty = tmp_path / "empty"
    empty.mkdir()
    filled = {key: value.format(tmp=empty, corrupt=repository_copy) for key, value in env.items()}
    result = _run_service(filled)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr
    _assert_one_sentence(result.stderr.strip())


def test_serving_does_not_import_tensorflow() -> None:
    code = (
        "import sys, service.__main__, service.app, service.inference, service.openapi_export\n"
        "names = ('tensorflow', 'keras', 'tf2onnx', 'service.gradcam')\n"
        "heavy = sorted(m for m in names if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def gated_warm_up(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Hold every model's warm-up until the event is set."""
    release = threading.Event()
    original = ServedModel.warm_up

    def held(self: ServedModel) -> None:
        assert release.wait(30)
        original(self)

    monkeypatch.setattr(ServedModel, "warm_up", held)
    yield release
    release.set()


def test_ready_is_503_until_every_model_is_warm(
    model_repository: Path, gated_warm_up: threading.Event, brain_png: bytes
) -> None:
    with TestClient(create_app(Settings(model_repository=model_repository))) as client:
        assert client.get("/health/live").json() == {"status": "alive"}
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json() == {
            "error": "Still warming up: tiny-4class, tiny-binary.",
            "error_type": "not_ready",
        }
        predicted = client.post("/predict", files={"file": ("x.png", brain_png)})
        assert predicted.status_code == 503 and predicted.json()["error_type"] == "not_ready"
        gated_warm_up.set()
        for _ in range(3000):
            response = client.get("/health/ready")
            if response.status_code == 200:
                break
            threading.Event().wait(0.01)
        assert response.status_code == 200
        assert response.json() == {
            "status": "ready",
            "models": [
                {"name": "tiny-4class", "version": "0.0.1-test", "ready": True},
                {"name": "tiny-binary", "version": "0.0.1-test", "ready": True},
            ],
        }


def test_a_failed_warm_up_keeps_the_service_live_but_not_ready(
    model_repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: ServedModel) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ServedModel, "warm_up", broken)
    repository = open_model_repository(model_repository, None, SessionConfig())
    with TestClient(create_app(Settings(model_repository=model_repository), repository=repository)) as client:
        for _ in range(3000):
            if repository.warm_up_error:
                break
            threading.Event().wait(0.01)
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").json() == {
            "error": "Model tiny-4class failed its warm-up run: out of memory",
            "error_type": "not_ready",
        }


def test_models_list_and_detail(client: TestClient, model_repository: Path) -> None:
    listing = client.get("/models").json()
    assert listing["default_model"] == "tiny-4class"
    assert [m["name"] for m in listing["models"]] == ["tiny-4class", "tiny-binary"]
    first = listing["models"][0]
    assert first["classes"] == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert first["input"] == {"height": 48, "width": 48, "channels": 3}
    assert (first["preprocessing"], first["provider"], first["ready"], first["default"]) == (
        "crop",
        "CPUExecutionProvider",
        True,
        True,
    )
    detail = client.get("/models/tiny-binary").json()
    assert detail["manifest"] == load_entry(model_repository / "tiny-binary")
    assert detail["sha256"] == detail["manifest"]["onnx"]["sha256"] and detail["default"] is False


def test_api_keys_guard_predict_and_models_only(
    make_client: Callable[..., TestClient], brain_png: bytes
) -> None:
    client = make_client(api_keys=[API_KEY, "another-key-0123456789"])
    files = {"file": ("x.png", brain_png)}
    for path in ("/models", "/models/tiny-4class"):
        assert client.get(path).json() == {
            "error": "The X-API-Key header is missing; this service requires an API key.",
            "error_type": "unauthorized",
        }
    assert client.post("/predict", files=files).status_code == 401
    wrong = client.post("/predict", files=files, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and "is not a valid key" in wrong.json()["error"]
    assert client.post("/predict", files=files, headers={"X-API-Key": API_KEY}).status_code == 200
    assert client.get("/models", headers={"X-API-Key": "another-key-0123456789"}).status_code == 200
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert client.get(path).status_code == 200


def test_a_request_without_a_key_is_refused_before_its_upload_is_read(
    make_app: Callable[..., FastAPI], brain_png: bytes
) -> None:
    app = make_app(api_keys=[API_KEY])
    chunks_read = 0
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks_read
        for chunk in (head.encode(), brain_png, f"\r\n--{boundary}--\r\n".encode()):
            chunks_read += 1
            yield chunk

    async def post(key: str | None) -> httpx.Response:
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if key is not None:
            headers["X-API-Key"] = key
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/predict", content=body(), headers=headers)

    for key in (None, "not-the-key-0123456789"):
        chunks_read = 0
        response = asyncio.run(post(key))
        assert response.status_code == 401 and response.json()["error_type"] == "unauthorized"
        assert chunks_read == 0, "the upload was read before the key was checked"
    chunks_read = 0
    response = asyncio.run(post(API_KEY))  # the app's lifespan did not run: past the key, 503
    assert response.status_code == 503 and chunks_read == 3


def test_without_api_keys_no_header_is_needed(client: TestClient) -> None:
    assert client.get("/models").status_code == 200


def _json_lines(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    formatter = JsonLogFormatter()
    return [json.loads(formatter.format(record)) for record in records]


def test_one_json_access_line_per_request_without_patient_data(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    path = get_testdata_file("MR_small.dcm")
    assert path is not None
    with caplog.at_level(logging.INFO):
        response = client.post(
            "/predict",
            files={"file": ("MR1.dcm", Path(path).read_bytes(), "application/dicom")},
            headers={"X-Request-ID": "req-42"},
        )
        client.get("/models/nope")
    assert response.status_code == 200
    access = _json_lines([r for r in caplog.records if r.name == "service.access"])
    assert len(access) == 2
    line = access[0]
    assert {key: line[key] for key in ("request_id", "method", "route", "status", "model", "label")} == {
        "request_id": "req-42",
        "method": "POST",
        "route": "/predict",
        "status": 200,
        "model": "tiny-4class",
        "label": response.json()["label"],
    }
    assert line["latency_ms"] > 0 and line["level"] == "info"
    assert (access[1]["route"], access[1]["status"], access[1]["error_type"]) == (
        "/models/{name}",
        404,
        "unknown_model",
    )
    everything = "\n".join(json.dumps(entry) for entry in _json_lines(caplog.records))
    assert "CompressedSamples" not in everything and "4MR1" not in everything


def test_several_apps_live_side_by_side(make_client: Callable[..., TestClient]) -> None:
    first, second = make_client(), make_client()
    first.get("/health/live")
    assert 'route="/health/live"' in first.get("/metrics").text
    assert 'route="/health/live"' not in second.get("/metrics").text


def test_sessions_prefer_cuda_when_present_and_never_spin(
    model_repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    opened: list[dict[str, Any]] = []
    real_session = ort.InferenceSession

    def recording_session(path: str, sess_options: Any, providers: list[str]) -> Any:
        opened.append({"options": sess_options, "providers": providers})
        return real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "InferenceSession", recording_session)
    repository = open_model_repository(
        model_repository, None, SessionConfig(intra_op_threads=3, inter_op_threads=1)
    )
    assert len(opened) == 2
    for record in opened:
        assert record["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        options = record["options"]
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert {model.provider for model in repository.models.values()} == {"CPUExecutionProvider"}  # what ran
    opened.clear()
    monkeypatch.setenv("MRI_ORT_ALLOW_SPINNING", "true")
    settings = Settings()
    open_model_repository(
        model_repository,
        None,
        SessionConfig(
            settings.ort_intra_op_threads, settings.ort_inter_op_threads, settings.ort_allow_spinning
        ),
    )
    for record in opened:
        assert record["options"].get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert record["options"].get_session_config_entry("session.inter_op.allow_spinning") == "1"


def test_without_a_configured_default_the_4class_model_answers(
    model_repository: Path, tmp_path: Path
) -> None:
    from exporter.manifest import load_manifest, write_manifest

    repository = tmp_path / "models"
    shutil.copytree(model_repository / "tiny-4class", repository / "tiny-4class")
    shutil.copytree(model_repository / "tiny-binary", repository / "a-binary")  # first by name
    manifest = load_manifest(repository / "a-binary")
    write_manifest(repository / "a-binary" / "manifest.json", {**manifest, "name": "a-binary"})

    assert open_model_repository(repository, None, SessionConfig()).default_name == "tiny-4class"
    assert open_model_repository(repository, "a-binary", SessionConfig()).default_name == "a-binary"
    shutil.rmtree(repository / "tiny-4class")
    assert open_model_repository(repository, None, SessionConfig()).default_name == "a-binary"
