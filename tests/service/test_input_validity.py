"""Trustworthy answers from the bundled models over the HTTP API: refusals, calibration and the heat map.

Everything here runs the real bundled entries (``models/``) on real images: held-out MRI test slices must be
accepted; a photo, a chest X-ray of ``../shared/extsets/ood-a``, noise and a CT DICOM must be refused with
422 ``not_brain_mri`` and no label.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from service.app import create_app
from service.settings import Settings
from training.calibration import ece_if_calibrated, expected_calibration_error, softmax
from training.data import preprocess_items
from training.ood_images import skimage_photos
from training.splits import load_split

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = REPO_ROOT / "models"

pytestmark = pytest.mark.realdata


def _client(**overrides: Any) -> Iterator[TestClient]:
    app = create_app(Settings.model_validate({"model_repository": MODELS, **overrides}))
    with TestClient(app) as client:
        from tests.service.conftest import wait_until_ready

        wait_until_ready(client)
        yield client


@pytest.fixture(scope="module")
def bundled() -> Iterator[TestClient]:
    """The bundled models, input-validity check on (the default)."""
    yield from _client()


def _png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return bytes(data.tobytes())


def _post(client: TestClient, data: bytes, name: str, **params: Any) -> Any:
    return client.post("/predict", files={"file": (name, data, "application/octet-stream")}, params=params)


def _assert_refused(response: Any) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_type"] == "not_brain_mri"
    assert "not look like a brain MRI slice" in body["error"] or "brain MRI slices only" in body["error"]
    assert "label" not in body and "probabilities" not in body


def _test_slices(data_root: Path, split: str, count: int) -> list[Path]:
    items = load_split(
        REPO_ROOT / "splits" / f"{split}.json", data_root_override=_roots(data_root, split)
    ).items("test")
    return [item.path for item in items[:: max(1, len(items) // count)][:count]]


def _roots(data_root: Path, split: str) -> list[Path]:
    return [data_root / ("sartaj-brain-tumor-mri" if split.startswith("sartaj") else "br35h")]


@pytest.mark.parametrize("model", ["sartaj-4class", "br35h-binary"])
def test_held_out_mri_test_slices_are_accepted(bundled: TestClient, data_root: Path, model: str) -> None:
    for split in ("sartaj-4class", "br35h-binary"):  # each model also accepts the other set's brains
        for path in _test_slices(data_root, split, 6):
            response = _post(bundled, path.read_bytes(), path.name, model=model)
            assert response.status_code == 200, (path, response.text)
            body = response.json()
            validity = body["in_distribution"]
            assert validity["checked"] and validity["enforced"] and validity["accepted"] is True
            assert validity["score"] <= validity["threshold"]
            assert body["status"] == "ok" and body["label"] in body["probabilities"]


@pytest.mark.parametrize("model", ["sartaj-4class", "br35h-binary"])
def test_a_photo_a_chest_xray_and_noise_are_refused(bundled: TestClient, data_root: Path, model: str) -> None:
    photos = dict(skimage_photos())
    xray = sorted((data_root.parent / "extsets" / "ood-a" / "chest_xray").rglob("*.jpg"))[0]
    noise = np.random.default_rng(7).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    uploads = {
        "chelsea.png": _png(photos["chelsea"]),
        "astronaut.png": _png(photos["astronaut"]),
        xray.name: xray.read_bytes(),
        "noise.png": _png(noise),
    }
    for name, data in uploads.items():
        response = _post(bundled, data, name, model=model, gradcam="true")
        _assert_refused(response)
        validity = response.json()["in_distribution"]
        assert validity["accepted"] is False and validity["enforced"] is True
        assert validity["score"] is None or validity["score"] > validity["threshold"]


def test_a_ct_dicom_is_refused_by_its_modality(bundled: TestClient) -> None:
    response = bundled.post(
        "/predict",
        files={"file": ("ct.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes(), "application/dicom")},
    )
    _assert_refused(response)
    body = response.json()
    assert body["in_distribution"] is None and "computed tomography" in body["error"]


def test_an_mr_dicom_naming_the_spine_is_refused(bundled: TestClient) -> None:
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    dataset.BodyPartExamined = "LSPINE"
    buffer = BytesIO()
    dataset.save_as(buffer)
    response = bundled.post("/predict", files={"file": ("mr.dcm", buffer.getvalue(), "application/dicom")})
    _assert_refused(response)
    assert "LSPINE" not in response.text  # the attribute's own value is never echoed


def test_min_confidence_turns_an_answer_into_uncertain_without_a_label(
    bundled: TestClient, data_root: Path
) -> None:
    path = _test_slices(data_root, "sartaj-4class", 1)[0]
    sure = _post(bundled, path.read_bytes(), path.name).json()
    assert sure["status"] == "ok" and sure["min_confidence"] is None
    floor = min(1.0, sure["confidence"] + 1e-6)
    unsure = _post(bundled, path.read_bytes(), path.name, min_confidence=floor).json()
    assert unsure["status"] == "uncertain" and unsure["label"] is None and unsure["min_confidence"] == floor
    assert unsure["probabilities"] == sure["probabilities"]
    below = _post(bundled, path.read_bytes(), path.name, min_confidence=sure["confidence"] / 2).json()
    assert below["status"] == "ok" and below["label"] == sure["label"]
    assert _post(bundled, path.read_bytes(), path.name, min_confidence=1.5).status_code == 422


def test_the_check_can_be_turned_off_and_the_answer_says_so(data_root: Path) -> None:
    noise = np.random.default_rng(7).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for client in _client(input_validity=False):
        body = _post(client, _png(noise), "noise.png").json()
        assert body["status"] == "ok" and body["label"] is not None
        assert body["in_distribution"]["enforced"] is False and body["in_distribution"]["accepted"] is False


def test_heatmap_png_decodes_to_the_upload_size(bundled: TestClient, data_root: Path) -> None:
    path = _test_slices(data_root, "sartaj-4class", 1)[0]
    original = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    body = _post(bundled, path.read_bytes(), path.name, gradcam="true").json()
    gradcam = body["gradcam"]
    raw = cv2.imdecode(
        np.frombuffer(base64.b64decode(gradcam["heatmap_png_base64"]), np.uint8), cv2.IMREAD_UNCHANGED
    )
    assert raw.ndim == 2 and raw.dtype == np.uint8 and raw.shape == original.shape[:2]
    assert raw.max() == 255
    # the bundled entries serve the heat map the pointing game chose (README, "Heat maps")
    assert (gradcam["method"], gradcam["layer"]) == ("layercam", "block6d_expand_activation")
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(gradcam["png_base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == original.shape


@pytest.mark.parametrize("model", ["sartaj-4class", "br35h-binary"])
def test_the_manifest_temperature_reproduces_the_reported_ece(data_root: Path, model: str) -> None:
    import json

    import onnxruntime as ort

    from service.preprocessing import Recipe

    manifest = json.loads((MODELS / model / "manifest.json").read_text())
    calibration = manifest["calibration"]
    split = load_split(
        REPO_ROOT / manifest["evaluation"]["split"]["path"], data_root_override=_roots(data_root, model)
    )
    items = split.items("test")
    images = preprocess_items(items, Recipe.from_dict(manifest["preprocessing"]), workers=2).astype(
        np.float32
    )
    labels = np.array([split.class_index(item.label) for item in items])
    session = ort.InferenceSession(str(MODELS / model / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = np.concatenate(
        [session.run(["logits"], {"image": images[i : i + 32]})[0] for i in range(0, len(images), 32)]
    )
    ece = expected_calibration_error(softmax(logits, calibration["temperature"]), labels)
    assert ece == pytest.approx(calibration["test"]["after"]["ece"], abs=1e-4)
    before = expected_calibration_error(softmax(logits), labels)
    assert before == pytest.approx(calibration["test"]["before"]["ece"], abs=1e-4)
    # the yardstick beside it: the ECE a perfectly calibrated model with these confidences shows
    floor = ece_if_calibrated(softmax(logits, calibration["temperature"]))
    reported = calibration["test"]["after"]["ece_if_calibrated"]
    assert floor["median"] == pytest.approx(reported["median"], abs=2e-3)
