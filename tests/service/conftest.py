"""Service fixtures: a tiny model repository built once per session, and apps / clients on top of it.

The repository holds two entries made like the exporter makes them (a flat Keras CNN trained for a few steps
on synthetic images, converted with tf2onnx, manifest with sha256s): ``tiny-4class`` (the default, first by
name) and ``tiny-binary``. The point is the service's plumbing, not accuracy.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bench.process import free_port, wait_for_ready_url
from exporter.manifest import FORMAT, file_record, validate_manifest, write_manifest
from service.app import create_app
from service.preprocessing import make_recipe
from service.settings import Settings

SIZE = 48
GRADCAM_LAYER = "last_conv"
TASKS = {"tiny-4class": "4class", "tiny-binary": "binary"}
CLASSES = {"4class": ["glioma", "meningioma", "no_tumor", "pituitary"], "binary": ["no_tumor", "tumor"]}


def _tiny_cnn(classes: int) -> Any:
    import keras

    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(image)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name=GRADCAM_LAYER)(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    probabilities = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="tiny")


TINY_TEMPERATURE = 1.5
TINY_THRESHOLD = 1.0e6


def _with_trust_head(proto: Any, model: Any, images: npt.NDArray[np.float32]) -> Any:
    """The exporter's trust head on a tiny graph: temperature, and a k-NN score on the last conv map."""
    import keras
    import onnxruntime as ort

    from exporter.trust_graph import FeatureTap, add_trust_head, choose_layout, layer_tensor, with_outputs

    tensor = layer_tensor(proto, GRADCAM_LAYER)
    probe = ort.InferenceSession(with_outputs(proto, [tensor]).SerializeToString())
    (onnx_map,) = probe.run([tensor], {"image": images[:2]})
    keras_map = keras.Model(model.input, model.get_layer(GRADCAM_LAYER).output)(images[:2])
    layout = choose_layout(np.asarray(onnx_map), np.asarray(keras_map).mean(axis=(1, 2)))
    bank = np.eye(16, dtype=np.float32)  # 16 unit rows: the channels of the last conv
    tap = FeatureTap(GRADCAM_LAYER, tensor, layout)
    return add_trust_head(proto, temperature=TINY_TEMPERATURE, taps=[tap], banks=[bank], scales=[1.0])


def _write_entry(repository: Path, name: str, task: str) -> None:
    import keras
    import onnx

    from exporter.convert import OPSET, convert_keras_to_onnx

    keras.utils.set_random_seed(len(name))
    classes = CLASSES[task]
    model = _tiny_cnn(len(classes))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, len(classes), 32)
    entry = repository / name
    entry.mkdir(parents=True)
    with warnings.catch_warnings():  # Keras 3.15 on NumPy 2: a DeprecationWarning about __array__(copy=)
        warnings.simplefilter("ignore", DeprecationWarning)
        model.fit(images, labels, batch_size=8, epochs=1, verbose=0)  # a few steps: not the initial weights
        model.save(entry / "model.keras")
    onnx.save(_with_trust_head(convert_keras_to_onnx(model), model, images), entry / "model.onnx")
    manifest = {
        "format": FORMAT,
        "name": name,
        "version": "0.0.1-test",
        "task": task,
        "classes": classes,
        "input": {
            "height": SIZE,
            "width": SIZE,
            "channels": 3,
            "layout": "NHWC",
            "dtype": "float32",
            "range": [0, 255],
        },
        "preprocessing": make_recipe("crop", SIZE).to_dict(),
        "onnx": {
            **file_record(entry / "model.onnx"),
            "opset": OPSET,
            "input": "image",
            "output": "probabilities",
        },
        "keras": {**file_record(entry / "model.keras"), "gradcam_layer": GRADCAM_LAYER},
        "backbone": "tiny-cnn",
        "head": "gap-softmax",
        "weights_init": "random",
        "evaluation": {"split": {"path": "synthetic", "sha256": "0" * 64}, "test": {"accuracy": 0.25}},
        "parity": {"images": 1, "max_abs_diff": 0.0, "argmax_agreement": 1.0, "tolerance": 1e-4},
        "created": "2024-01-01T00:00:00Z",
        # plumbing only: a real temperature-scaled graph with a k-NN score, but a threshold that accepts
        # everything (the bundled models' real checks are tested in test_input_validity.py)
        "calibration": {"temperature": TINY_TEMPERATURE},
        "input_validity": {"threshold": TINY_THRESHOLD, "output": "ood_score"},
    }
    assert validate_manifest(manifest, entry) == []
    write_manifest(entry / "manifest.json", manifest)


@pytest.fixture(autouse=True)
def _no_service_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set the service's settings themselves; an operator's MRI_* variables must not leak in."""
    for name in os.environ:
        if name.startswith("MRI_") and name != "MRI_DATA_ROOT":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository folder with the entries ``tiny-4class`` and ``tiny-binary`` (read-only for tests)."""
    repository = tmp_path_factory.mktemp("models")
    for name, task in TASKS.items():
        _write_entry(repository, name, task)
    return repository


@pytest.fixture
def make_app(model_repository: Path) -> Callable[..., FastAPI]:
    """``make_app(**settings)``: an app on the tiny repository; keyword arguments override settings."""

    def factory(**overrides: Any) -> FastAPI:
        return create_app(Settings.model_validate({"model_repository": model_repository, **overrides}))

    return factory


def wait_until_ready(client: TestClient, timeout_s: float = 60.0) -> None:
    """Poll /health/ready until 200 (warm-up runs in the background after start-up)."""
    deadline = time.monotonic() + timeout_s
    while client.get("/health/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout_s} s: {client.get('/health/ready').json()}")
        time.sleep(0.01)


@pytest.fixture
def make_client(make_app: Callable[..., FastAPI]) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)``: a started (lifespan run) and ready TestClient; closed after the test."""
    clients: list[TestClient] = []

    def factory(*, raise_server_exceptions: bool = True, **overrides: Any) -> TestClient:
        client = TestClient(make_app(**overrides), raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        wait_until_ready(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A ready client with the default settings on the tiny repository."""
    return make_client()


def encode(image: npt.NDArray[Any], ext: str = ".png") -> bytes:
    """An array (H, W[, C]) in OpenCV's channel order encoded as ``ext``."""
    ok, data = cv2.imencode(ext, image)
    assert ok
    return bytes(data.tobytes())


@pytest.fixture(scope="session")
def encode_image() -> Callable[..., bytes]:
    """``encode_image(array, ".png")``: OpenCV-encoded bytes (tests cannot import from conftest)."""
    return encode


@pytest.fixture(scope="session")
def brain_png() -> bytes:
    """A synthetic 96 x 80 'slice': a bright ellipse on black, as PNG."""
    image = np.zeros((80, 96, 3), np.uint8)
    cv2.ellipse(image, (48, 40), (36, 30), 0, 0, 360, (150, 150, 150), -1)
    cv2.circle(image, (60, 34), 9, (240, 240, 240), -1)
    return encode(image)


# A real ``python -m service`` process on loopback, shared by the tests that talk HTTP to it.
MAX_UPLOAD_BYTES = 2_000_000
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, stderr log file) of a running ``python -m service``; stopped with SIGTERM afterwards."""
    log = tmp_path_factory.mktemp("uvicorn") / "stderr.log"
    with running_service(model_repository, log, {"MRI_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)}) as base:
        yield base, log


@contextlib.contextmanager
def running_service(model_repository: Path, log: Path, settings: dict[str, str]) -> Iterator[str]:
    """A ``python -m service`` on a free loopback port with these ``MRI_*`` settings, its stderr in ``log``;
    on exit: SIGTERM, a clean shutdown, and a log of JSON lines only."""
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
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_ready_url(process, f"{base}/health/ready", log, timeout_s=120)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            # uvicorn re-raises the signal it caught once the graceful shutdown is done
            assert process.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
            assert "Application shutdown complete." in log.read_text()
            assert_json_log(log)
        finally:
            process.kill()


def assert_json_log(log: Path) -> None:
    """Every line the service wrote to stderr is one JSON object (no plain-text line from any library), and
    no request of the run was answered with a 5xx."""
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} of the service log is not JSON: {line[:200]!r}")
        assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= set(entry), line[:200]
        # (readiness answers 503 while the models load: that is its job, not a failure)
        if entry["logger"] == "service.access" and not entry.get("route", "").endswith("/health/ready"):
            assert int(entry["status"]) < 500, f"a request was answered {entry['status']}: {line[:200]}"
