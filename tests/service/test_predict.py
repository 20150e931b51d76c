"""POST /predict end to end through TestClient: real slices and their quirks, Grad-CAM, DICOM, concurrency."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from exporter.manifest import load_entry
from service.app import create_app
from service.explanations import GradcamEngines
from service.model_repository import ServedModel
from service.schemas import DISCLAIMER
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
FOUR_CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]
SARTAJ_SLICES = [
    "sartaj-brain-tumor-mri/Testing/glioma_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Testing/meningioma_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Testing/no_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Testing/pituitary_tumor/image(1).jpg",
]
PNG_UNDER_JPG_NAME = [f"br35h/no/no{n}.jpg" for n in (396, 400, 401, 408, 409)] + [
    f"br35h/yes/y{n}.jpg" for n in (355, 549, 623, 682, 885, 1163, 1264, 1349)
]
GREYSCALE = ["br35h/yes/y1071.jpg", "br35h/yes/y1301.jpg", "br35h/no/no388.jpg"]
RGBA = ["br35h/no/no400.jpg", "br35h/no/no408.jpg", "br35h/no/no409.jpg", "br35h/pred/pred47.jpg"]
NAME_WITH_SPACES = "sartaj-brain-tumor-mri/Training/glioma_tumor/gg (1).jpg"


def predict(
    client: TestClient, data: bytes, name: str = "slice.jpg", content_type: str = "image/jpeg", **params: str
) -> Any:
    return client.post("/predict", files={"file": (name, data, content_type)}, params=params)


def assert_prediction(
    response: Any, model: str = "tiny-4class", classes: list[str] = FOUR_CLASSES
) -> dict[str, Any]:
    """A 200 that follows the contract; returns the body."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["label"] in classes
    assert list(body["probabilities"]) == classes
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["confidence"] == body["probabilities"][body["label"]] == max(body["probabilities"].values())
    assert body["model"]["name"] == model and len(body["model"]["sha256"]) == 64
    assert body["disclaimer"] == DISCLAIMER and "not a medical diagnosis" in body["disclaimer"]
    assert body["request_id"] == response.headers["x-request-id"]
    timings = body["timings_ms"]
    assert all(timings[stage] >= 0 for stage in ("queue", "decode", "preprocess", "inference", "total"))
    assert timings["total"] >= timings["decode"] + timings["preprocess"] + timings["inference"]
    assert "inference;dur=" in response.headers["server-timing"]
    return body


def test_the_answer_follows_the_contract(
    client: TestClient, brain_png: bytes, model_repository: Path
) -> None:
    body = assert_prediction(predict(client, brain_png, "slice.png", "image/png"))
    assert body["model"] == {
        "name": "tiny-4class",
        "version": "0.0.1-test",
        "sha256": load_entry(model_repository / "tiny-4class")["onnx"]["sha256"],
    }
    assert body["gradcam"] is None and body["timings_ms"]["gradcam"] is None


def test_the_answer_matches_onnx_runtime_on_the_preprocessed_image(
    client: TestClient, brain_png: bytes, model_repository: Path
) -> None:
    from service.model_repository import SessionConfig
    from service.preprocessing import apply_recipe, decode_image

    model = ServedModel.from_manifest(
        load_entry(model_repository / "tiny-4class"), model_repository / "tiny-4class"
    )
    model.load(SessionConfig())
    expected = model.predict(apply_recipe(decode_image(brain_png), model.recipe)[np.newaxis])[0]
    body = assert_prediction(predict(client, brain_png, "slice.png", "image/png"))
    assert list(body["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-6)


def test_model_query_and_default_model_setting(
    make_client: Callable[..., TestClient], brain_png: bytes
) -> None:
    binary = ["no_tumor", "tumor"]
    client = make_client()
    assert_prediction(predict(client, brain_png, model="tiny-binary"), "tiny-binary", binary)
    client = make_client(default_model="tiny-binary")
    assert_prediction(predict(client, brain_png), "tiny-binary", binary)
    assert_prediction(predict(client, brain_png, model="tiny-4class"))


@pytest.mark.realdata
@pytest.mark.parametrize("relative", [*SARTAJ_SLICES, "br35h/yes/y0.jpg", "br35h/no/No12.jpg"])
def test_real_mri_slices(client: TestClient, data_root: Path, relative: str) -> None:
    assert_prediction(predict(client, (data_root / relative).read_bytes(), Path(relative).name))


@pytest.mark.realdata
@pytest.mark.parametrize("relative", PNG_UNDER_JPG_NAME)
def test_png_data_under_a_jpg_name(client: TestClient, data_root: Path, relative: str) -> None:
    assert_prediction(predict(client, (data_root / relative).read_bytes(), Path(relative).name, "image/jpeg"))


@pytest.mark.realdata
@pytest.mark.parametrize("relative", GREYSCALE + RGBA)
def test_greyscale_and_rgba_slices(client: TestClient, data_root: Path, relative: str) -> None:
    assert_prediction(predict(client, (data_root / relative).read_bytes(), Path(relative).name))


@pytest.mark.realdata
@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16_bit_slices(
    client: TestClient, data_root: Path, encode_image: Callable[..., bytes], ext: str
) -> None:
    grey = cv2.imread(str(data_root / SARTAJ_SLICES[0]), cv2.IMREAD_GRAYSCALE)  # (H, W) uint8
    deep = (grey.astype(np.uint16) * 64 + 100).astype(np.uint16)  # 16-bit data that does not fill the range
    data = encode_image(deep, ext)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert_prediction(predict(client, data, f"deep{ext}", "application/octet-stream"))


@pytest.mark.realdata
def test_file_name_with_spaces_and_parentheses(client: TestClient, data_root: Path) -> None:
    assert_prediction(predict(client, (data_root / NAME_WITH_SPACES).read_bytes(), "gg (1).jpg"))


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_implicit.dcm"])
@pytest.mark.parametrize("content_type", ["application/dicom", "application/octet-stream"])
def test_pydicom_mr_samples(client: TestClient, name: str, content_type: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    assert_prediction(predict(client, Path(path).read_bytes(), name, content_type))


def _decode_png(body: dict[str, Any]) -> npt.NDArray[np.uint8]:
    png = base64.b64decode(body["gradcam"]["png_base64"], validate=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image, np.uint8)


@pytest.mark.realdata
def test_gradcam_png_decodes_has_the_original_size_and_agrees_with_onnx(
    client: TestClient, data_root: Path
) -> None:
    data = (data_root / SARTAJ_SLICES[3]).read_bytes()  # 488 x 512: not square
    height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    body = assert_prediction(predict(client, data, gradcam="true"))
    gradcam = body["gradcam"]
    overlay = _decode_png(body)
    assert overlay.shape == (height, width, 3) and (gradcam["width"], gradcam["height"]) == (width, height)
    assert overlay.std() > 1.0  # not a constant image
    assert gradcam["class"] == body["label"] and gradcam["layer"] == "last_conv"
    assert gradcam["method"] == "gradcam"  # the manifest names none: plain Grad-CAM
    assert gradcam["agrees_with_onnx"] is True
    assert body["timings_ms"]["gradcam"] > 0


@pytest.mark.realdata
def test_gradcam_of_another_class(client: TestClient, data_root: Path) -> None:
    data = (data_root / SARTAJ_SLICES[0]).read_bytes()
    label = assert_prediction(predict(client, data))["label"]
    other = next(name for name in FOUR_CLASSES if name != label)
    body = assert_prediction(predict(client, data, gradcam_class=other))  # implies gradcam=true
    assert body["label"] == label and body["gradcam"]["class"] == other
    _decode_png(body)


def test_gradcam_default_setting(make_client: Callable[..., TestClient], brain_png: bytes) -> None:
    client = make_client(gradcam_default=True)  # the Keras twins are warmed before ready
    assert assert_prediction(predict(client, brain_png))["gradcam"] is not None
    assert assert_prediction(predict(client, brain_png, gradcam="false"))["gradcam"] is None


def test_gradcam_preload_loads_every_twin_before_ready(
    make_client: Callable[..., TestClient], brain_png: bytes
) -> None:
    lazy = make_client()
    assert not lazy.app.state.inference.gradcam_engines._engines  # loaded on first use only
    client = make_client(gradcam_preload=True)
    engines = client.app.state.inference.gradcam_engines._engines
    assert set(engines) == {"tiny-4class", "tiny-binary"} and all(e.loaded for e in engines.values())
    assert assert_prediction(predict(client, brain_png))["gradcam"] is None  # still off by default
    assert assert_prediction(predict(client, brain_png, gradcam="true"))["gradcam"] is not None


def test_a_twin_that_disagrees_with_onnx_is_reported_and_logged(
    client: TestClient, brain_png: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    label = assert_prediction(predict(client, brain_png))["label"]
    other = next(index for index, name in enumerate(FOUR_CLASSES) if name != label)

    class DisagreeingEngine:
        def compute(self, x: npt.NDArray[np.float32], class_index: int | None = None) -> Any:
            from service.gradcam import GradcamResult

            probabilities = np.full(4, 0.1, np.float32)
            probabilities[other] = 0.7
            heatmap = np.linspace(0, 1, 36, dtype=np.float32).reshape(6, 6)
            return GradcamResult(heatmap, other if class_index is None else class_index, probabilities)

    monkeypatch.setattr(GradcamEngines, "for_model", lambda self, model: DisagreeingEngine())
    with caplog.at_level(logging.WARNING, logger="service.gradcam"):
        body = assert_prediction(predict(client, brain_png, gradcam="true"))
    assert body["label"] == label and body["gradcam"]["agrees_with_onnx"] is False
    assert any("Keras twin of model tiny-4class predicts" in r.getMessage() for r in caplog.records)


def test_request_id_is_echoed_when_sane(client: TestClient, brain_png: bytes) -> None:
    headers = {"X-Request-ID": "ris-2024.06:abc-1"}
    response = client.post("/predict", files={"file": ("x.png", brain_png)}, headers=headers)
    assert response.headers["x-request-id"] == "ris-2024.06:abc-1" == response.json()["request_id"]
    insane = client.get("/health/live", headers={"X-Request-ID": "<script>" + "x" * 300})
    assert len(insane.headers["x-request-id"]) == 32 and "<" not in insane.headers["x-request-id"]


@pytest.mark.realdata
def test_fifty_concurrent_requests_all_succeed(client: TestClient, data_root: Path) -> None:
    slices = [(data_root / relative).read_bytes() for relative in SARTAJ_SLICES]
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda i: predict(client, slices[i % 4], f"s{i}.jpg"), range(50)))
    bodies = [assert_prediction(response) for response in responses]
    assert len({body["request_id"] for body in bodies}) == 50
    labels = {body["label"] for body in bodies[:4]}
    assert all(body["label"] in labels for body in bodies)  # same image, same answer under load
    assert "mri_inflight_requests 1.0" in client.get("/metrics").text  # only the /metrics request itself


def test_overload_answers_429_and_the_held_request_still_succeeds(
    make_client: Callable[..., TestClient], brain_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(max_concurrency=1, queue_timeout_s=0.2)
    entered, release = threading.Event(), threading.Event()
    original = ServedModel.run

    def slow_run(self: ServedModel, batch: npt.NDArray[np.float32]) -> Any:
        entered.set()
        assert release.wait(30)
        return original(self, batch)

    monkeypatch.setattr(ServedModel, "run", slow_run)
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(predict, client, brain_png)
        assert entered.wait(30)
        refused = predict(client, brain_png)
        assert client.get("/health/ready").status_code == 200  # the event loop is not blocked
        release.set()
        assert_prediction(held.result())
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {
        "error": "The service is busy: all 1 prediction slots stayed taken for 0.2 s. Retry in a moment.",
        "error_type": "overloaded",
    }


def _bundled_entries() -> list[Path]:
    root = REPO_ROOT / "models"
    return sorted(p for p in root.glob("*/manifest.json")) if root.is_dir() else []


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not _bundled_entries(), reason="no bundled model under models/ yet")
def test_bundled_models_label_held_out_slices(data_root: Path) -> None:
    with TestClient(create_app(Settings(model_repository=REPO_ROOT / "models"))) as client:
        deadline = time.monotonic() + 120
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the bundled models did not become ready"
            time.sleep(0.1)
        for manifest_path in _bundled_entries():
            manifest = json.loads(manifest_path.read_text())
            split = json.loads(
                (REPO_ROOT / manifest["evaluation"]["split"]["path"]).read_text()
            )  # abs. stays
            roots = [data_root / Path(root).name for root in split["roots"]]
            items = split["subsets"]["test"][::7][:24]  # spread over the (label-sorted) test subset
            correct = 0
            for item in items:
                response = predict(
                    client, (roots[item["root"]] / item["path"]).read_bytes(), model=manifest["name"]
                )
                body = assert_prediction(response, manifest["name"], manifest["classes"])
                correct += body["label"] == item["label"]
            floor = max(0.5, manifest["evaluation"]["test"]["accuracy"] - 0.25)
            assert correct / len(items) >= floor, f"{manifest['name']}: {correct}/{len(items)} correct"
