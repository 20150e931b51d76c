"""A client generated from the committed openapi.json works against a real ``python -m service``.

openapi-python-client turns ``openapi.json`` into a typed package in a temporary folder (no network, no
post-hooks, warnings are errors); the tests import it under a unique name and, only through its generated
``Client``, ``sync_detailed`` functions and models, classify real MRI slices, ask for Grad-CAM, list the
models and provoke errors. That proves the contract is complete and exact enough for an integration to be
generated from it instead of written by hand: every operation survives generation, the upload field is a
file, and each answer (success or error) parses into its documented type.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import re
import subprocess
import sys
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
from pydicom.data import get_testdata_file

OPENAPI_JSON = Path(__file__).resolve().parents[2] / "openapi.json"
GLIOMA_SLICE = "sartaj-brain-tumor-mri/Testing/glioma_tumor/image(1).jpg"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Generated:
    """The generated package, imported as ``name`` from ``root``."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root

    def module(self, dotted: str) -> ModuleType:
        """``module("api.prediction.predict")``: a module of the generated package."""
        return importlib.import_module(f"{self.name}.{dotted}")

    def model(self, class_name: str) -> Any:
        """A class of the generated ``models`` package, e.g. ``model("PredictResponse")``."""
        return getattr(self.module("models"), class_name)

    def client(self, base_url: str) -> Any:
        """The generated ``Client``, raising on any status openapi.json does not document."""
        return self.module("client").Client(base_url=base_url, timeout=60, raise_on_unexpected_status=True)


def _snake(operation_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    """Generate the client once per module and put it on ``sys.path`` for this module's tests only."""
    work = tmp_path_factory.mktemp("openapi_client")
    name = f"mri_generated_client_{uuid.uuid4().hex[:12]}"
    config = work / "config.json"
    config.write_text(
        json.dumps(
            {
                "package_name_override": name,
                "project_name_override": name.replace("_", "-"),
                "post_hooks": [],
            }
        )
    )
    root = work / "src"
    command = [
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        str(OPENAPI_JSON),
        "--output-path",
        str(root / name),
        "--config",
        str(config),
        "--meta",
        "none",
        "--fail-on-warning",
    ]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    sys.path.insert(0, str(root))
    try:
        yield Generated(name, root)
    finally:
        sys.path.remove(str(root))
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[module]
        importlib.invalidate_caches()


def _upload(generated: Generated, data: bytes, file_name: str, mime_type: str) -> Any:
    file = generated.module("types").File(payload=io.BytesIO(data), file_name=file_name, mime_type=mime_type)
    return generated.model("BodyPredict")(file=file)


def test_every_operation_and_schema_survives_generation(generated: Generated) -> None:
    spec = json.loads(OPENAPI_JSON.read_text())
    operations = {
        _snake(operation["operationId"]) for path in spec["paths"].values() for operation in path.values()
    }
    assert {"predict", "list_models", "get_model", "live", "ready", "metrics"} <= operations
    modules = {p.stem for p in (generated.root / generated.name / "api").rglob("*.py")} - {"__init__"}
    assert modules == operations
    for schema in spec["components"]["schemas"]:
        class_name = "".join(part[:1].upper() + part[1:] for part in schema.split("_"))
        assert hasattr(generated.module("models"), class_name), schema
    hints = typing.get_type_hints(generated.model("BodyPredict"))
    assert hints["file"] is generated.module("types").File, (
        f"the multipart field 'file' is generated as {hints['file']!r}, not a file upload: "
        "openapi-python-client 0.29 reads only 'format: binary', not OpenAPI 3.1's 'contentMediaType', "
        "as a file"
    )


@pytest.mark.realdata
@pytest.mark.slow
def test_predict_a_real_slice_through_the_generated_client(
    generated: Generated, server: tuple[str, Path], data_root: Path
) -> None:
    predict = generated.module("api.prediction.predict")
    data = (data_root / GLIOMA_SLICE).read_bytes()
    with generated.client(server[0]) as client:
        response = predict.sync_detailed(
            client=client, body=_upload(generated, data, Path(GLIOMA_SLICE).name, "image/jpeg")
        )
    assert response.status_code == 200, response.content
    answer = response.parsed
    assert isinstance(answer, generated.model("PredictResponse"))
    probabilities = answer.probabilities.additional_properties
    assert answer.label in probabilities
    assert set(probabilities) == {"glioma", "meningioma", "no_tumor", "pituitary"}
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert answer.confidence == pytest.approx(max(probabilities.values()))
    assert answer.model.name == "tiny-4class"
    assert answer.status == "ok"  # the new fields of trustworthy answers, typed by the generated client
    validity = answer.in_distribution
    assert isinstance(validity, generated.model("InDistribution"))
    assert validity.checked and validity.enforced and validity.accepted is True
    assert isinstance(validity.score, float) and validity.score <= validity.threshold
    assert answer.gradcam is None
    assert "not a medical diagnosis" in answer.disclaimer
    assert answer.request_id == response.headers["x-request-id"]


@pytest.mark.realdata
@pytest.mark.slow
def test_gradcam_through_the_generated_client(
    generated: Generated, server: tuple[str, Path], data_root: Path
) -> None:
    predict = generated.module("api.prediction.predict")
    data = (data_root / GLIOMA_SLICE).read_bytes()
    with generated.client(server[0]) as client:
        response = predict.sync_detailed(
            client=client, body=_upload(generated, data, "slice.jpg", "image/jpeg"), gradcam=True
        )
    assert response.status_code == 200, response.content
    answer = response.parsed
    assert isinstance(answer, generated.model("PredictResponse"))
    gradcam = answer.gradcam
    assert isinstance(gradcam, generated.model("GradcamResponse"))
    assert gradcam.class_ == answer.label
    assert gradcam.layer and isinstance(gradcam.agrees_with_onnx, bool)
    assert str(gradcam.method) in ("gradcam", "gradcam++", "layercam")
    raw = cv2.imdecode(
        np.frombuffer(base64.b64decode(gradcam.heatmap_png_base64, validate=True), np.uint8),
        cv2.IMREAD_UNCHANGED,
    )
    assert raw is not None and raw.shape == (gradcam.height, gradcam.width)  # greyscale, the upload's size
    png = base64.b64decode(gradcam.png_base64, validate=True)
    assert png.startswith(PNG_SIGNATURE)
    heat_map = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert heat_map is not None and heat_map.shape[:2] == (gradcam.height, gradcam.width)
    uploaded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert uploaded is not None and uploaded.shape[:2] == (gradcam.height, gradcam.width)


@pytest.mark.realdata
@pytest.mark.slow
def test_models_and_health_through_the_generated_client(
    generated: Generated, server: tuple[str, Path]
) -> None:
    with generated.client(server[0]) as client:
        listed = generated.module("api.models.list_models").sync_detailed(client=client)
        detail = generated.module("api.models.get_model").sync_detailed("tiny-binary", client=client)
        live = generated.module("api.health.live").sync_detailed(client=client)
        ready = generated.module("api.health.ready").sync_detailed(client=client)
    assert listed.status_code == 200, listed.content
    assert isinstance(listed.parsed, generated.model("ModelList"))
    assert listed.parsed.default_model == "tiny-4class"
    summaries = {m.name: m for m in listed.parsed.models}
    assert set(summaries) == {"tiny-4class", "tiny-binary"}
    assert all(isinstance(m, generated.model("ModelSummary")) and m.ready for m in summaries.values())
    assert summaries["tiny-binary"].classes == ["no_tumor", "tumor"]
    assert summaries["tiny-4class"].default and not summaries["tiny-binary"].default
    assert detail.status_code == 200, detail.content
    assert isinstance(detail.parsed, generated.model("ModelDetail")) and detail.parsed.name == "tiny-binary"
    assert isinstance(live.parsed, generated.model("LivenessResponse")) and live.parsed.status == "alive"
    assert isinstance(ready.parsed, generated.model("ReadinessResponse")) and ready.parsed.status == "ready"


@pytest.mark.realdata
@pytest.mark.slow
def test_errors_parse_into_the_generated_error_model(
    generated: Generated, server: tuple[str, Path], data_root: Path
) -> None:
    predict = generated.module("api.prediction.predict")
    error_model = generated.model("ErrorResponse")
    data = (data_root / GLIOMA_SLICE).read_bytes()
    with generated.client(server[0]) as client:
        not_an_image = predict.sync_detailed(
            client=client, body=_upload(generated, b"hello", "x.txt", "text/plain")
        )
        unknown_model = predict.sync_detailed(
            client=client, body=_upload(generated, data, "slice.jpg", "image/jpeg"), model="resnet"
        )
        unknown_detail = generated.module("api.models.get_model").sync_detailed("resnet", client=client)
        ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
        not_mri = predict.sync_detailed(
            client=client, body=_upload(generated, ct, "ct.dcm", "application/dicom")
        )
    assert not_mri.status_code == 422, not_mri.content  # a refusal is a typed error, never a diagnosis
    assert isinstance(not_mri.parsed, generated.model("NotBrainMriResponse"))
    assert not_mri.parsed.error_type == "not_brain_mri" and not hasattr(not_mri.parsed, "label")
    assert not_an_image.status_code == 400, not_an_image.content
    assert isinstance(not_an_image.parsed, error_model)
    assert not_an_image.parsed.error_type == "invalid_image" and not_an_image.parsed.error
    for response in (unknown_model, unknown_detail):
        assert response.status_code == 404, response.content
        assert isinstance(response.parsed, error_model)
        assert response.parsed.error_type == "unknown_model" and "resnet" in response.parsed.error
