"""The Open Inference Protocol (KServe v2 / Triton HTTP/REST) routes, through the real Triton HTTP client.

The live tests start one ``python -m service`` on the bundled models and talk to it only with
``tritonclient.http.InferenceServerClient``: server and model metadata, liveness and readiness, single and
batched inference on real Sartaj test slices (BYTES, in binary and in base64 JSON, and FP32 preprocessed
pixels), whose probabilities must equal those of ``/predict`` for the same files; and the refusals, which
tritonclient must raise as ``InferenceServerException`` with the service's sentence and status. The
in-process tests check the error shapes and the limits on the tiny test models.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from service.app import create_app
from service.inference import PredictionLimiter, decode_upload
from service.oip_batching import DynamicBatcher
from service.preprocessing import Recipe, apply_recipe
from service.settings import Settings
from tests.service.conftest import running_service, wait_until_ready

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[2] / "models"
MODEL = "sartaj-4class"
SLICES = (  # one of each tumour class of the Sartaj test set
    "sartaj-brain-tumor-mri/Testing/glioma_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Testing/meningioma_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Testing/pituitary_tumor/image(1).jpg",
)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a ``python -m service`` on the bundled models."""
    log = tmp_path_factory.mktemp("oip") / "stderr.log"
    with running_service(BUNDLED, log, {}) as base:
        yield base


@pytest.fixture(scope="module")
def triton(live: str) -> Iterator[Any]:
    client = tritonclient_http.InferenceServerClient(url=live.removeprefix("http://"), network_timeout=60.0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def slices(data_root: Path) -> list[bytes]:
    return [(data_root / name).read_bytes() for name in SLICES]


@pytest.fixture(scope="module")
def predicted(live: str, slices: list[bytes]) -> dict[str, list[dict[str, Any]]]:
    """The /predict answers for the slices, by model: what the protocol must reproduce."""
    answers: dict[str, list[dict[str, Any]]] = {}
    with httpx.Client(base_url=live, timeout=60) as client:
        for model in (MODEL, "br35h-binary"):
            answers[model] = []
            for data in slices:
                response = client.post("/predict", params={"model": model}, files={"file": ("s.jpg", data)})
                assert response.status_code == 200, response.text
                answers[model].append(response.json())
    return answers


def _bytes_input(files: list[bytes], binary: bool = True) -> Any:
    tensor = tritonclient_http.InferInput("image_bytes", [len(files)], "BYTES")
    if binary:  # tritonclient's default: raw bytes after the JSON header
        tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    else:  # JSON: tritonclient sends strings, so the files go as base64
        encoded = [base64.b64encode(data) for data in files]
        tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
    return tensor


def _expected(answers: list[dict[str, Any]], classes: list[str]) -> npt.NDArray[np.float64]:
    return np.array([[answer["probabilities"][name] for name in classes] for answer in answers])


@pytest.mark.realdata
@pytest.mark.slow
def test_server_and_model_metadata_and_health(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    server = triton.get_server_metadata()
    assert server["name"] == "brain-tumour-mri-inference" and server["version"]
    assert "binary_tensor_data" in server["extensions"]
    assert triton.is_model_ready(MODEL) and triton.is_model_ready(MODEL, "1")
    assert not triton.is_model_ready("resnet") and not triton.is_model_ready(MODEL, "2")
    metadata = triton.get_model_metadata(MODEL)
    assert metadata == triton.get_model_metadata(MODEL, "1")
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == (
        MODEL,
        ["1"],
        "onnxruntime_onnx",
    )
    assert metadata["inputs"] == [
        {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
        {"name": "image", "datatype": "FP32", "shape": [-1, 224, 224, 3]},
    ]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "ood_score", "datatype": "FP32", "shape": [-1]},
        {"name": "accepted", "datatype": "BOOL", "shape": [-1]},
    ]
    parameters = metadata["parameters"]
    assert parameters["classes"] == "glioma,meningioma,no_tumor,pituitary"
    assert parameters["input_validity_enforced"] is True and 0.5 < parameters["ood_threshold"] < 2.0
    with pytest.raises(InferenceServerException) as unknown:
        triton.get_model_metadata("resnet")
    assert unknown.value.status() == "404" and "There is no model 'resnet'" in unknown.value.message()


@pytest.mark.realdata
@pytest.mark.slow
def test_a_batch_of_real_slices_as_binary_bytes_matches_predict(
    triton: Any, slices: list[bytes], predicted: dict[str, list[dict[str, Any]]]
) -> None:
    result = triton.infer(MODEL, [_bytes_input(slices)])  # no outputs named: tritonclient asks for binary
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 3 * 4 * 4
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 4)
    classes = ["glioma", "meningioma", "no_tumor", "pituitary"]
    np.testing.assert_allclose(probabilities, _expected(predicted[MODEL], classes), rtol=0, atol=TOLERANCE)
    scores = [answer["in_distribution"]["score"] for answer in predicted[MODEL]]
    np.testing.assert_allclose(result.as_numpy("ood_score"), scores, rtol=0, atol=TOLERANCE)
    assert result.as_numpy("accepted").tolist() == [True, True, True]
    assert [classes[i] for i in probabilities.argmax(axis=1)] == [a["label"] for a in predicted[MODEL]]


@pytest.mark.realdata
@pytest.mark.slow
def test_one_slice_as_base64_json_on_a_versioned_path(
    triton: Any, slices: list[bytes], predicted: dict[str, list[dict[str, Any]]]
) -> None:
    outputs = [
        tritonclient_http.InferRequestedOutput(n, binary_data=False) for n in ("probabilities", "accepted")
    ]
    result = triton.infer(
        "br35h-binary", [_bytes_input(slices[:1], binary=False)], model_version="1", outputs=outputs,
        request_id="slice-1",
    )  # fmt: skip
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "br35h-binary",
        "1",
        "slice-1",
    )
    assert [output["name"] for output in response["outputs"]] == ["probabilities", "accepted"]
    expected = _expected(predicted["br35h-binary"][:1], ["no_tumor", "tumor"])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=0, atol=TOLERANCE)
    assert result.as_numpy("accepted").tolist() == [True]


@pytest.mark.realdata
@pytest.mark.slow
def test_preprocessed_fp32_pixels_match_predict(
    triton: Any, slices: list[bytes], predicted: dict[str, list[dict[str, Any]]]
) -> None:
    manifest = json.loads((BUNDLED / MODEL / "manifest.json").read_text())
    recipe = Recipe.from_dict(manifest["preprocessing"])
    pixels = np.stack([apply_recipe(decode_upload(data, None, max_pixels=10**8), recipe) for data in slices])
    tensor = tritonclient_http.InferInput("image", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels.astype(np.float32))
    result = triton.infer(MODEL, [tensor], request_compression_algorithm="gzip")
    classes = ["glioma", "meningioma", "no_tumor", "pituitary"]
    expected = _expected(predicted[MODEL], classes)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=0, atol=TOLERANCE)


def _noise_png() -> bytes:
    noise = np.random.default_rng(7).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".png", noise)
    assert ok
    return bytes(data.tobytes())


@pytest.mark.realdata
@pytest.mark.slow
def test_refusals_reach_tritonclient_with_the_sentence_and_status(triton: Any, slices: list[bytes]) -> None:
    cases = {
        "404": (lambda: triton.infer("resnet", [_bytes_input(slices[:1])]), "There is no model 'resnet'"),
        "400": (
            lambda: triton.infer(MODEL, [_bytes_input([slices[0], b"\x89PNG\r\n\x1a\n corrupt"])]),
            "Element 1 of input 'image_bytes'",
        ),
        "422": (
            lambda: triton.infer(MODEL, [_bytes_input([slices[0], _noise_png(), slices[1]])]),
            "1 of the 3 images do not look like brain MRI slices: elements 1 (",
        ),
    }
    for status, (call, sentence) in cases.items():
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert refused.value.status() == status, refused.value
        assert sentence in refused.value.message(), refused.value
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    with pytest.raises(InferenceServerException) as not_mri:
        triton.infer(MODEL, [_bytes_input([ct])])
    assert not_mri.value.status() == "422" and "MR" in not_mri.value.message()


# In-process, on the tiny test models (48 x 48): error shapes and limits.


def _infer_json(files: list[bytes], name: str = "image_bytes", **fields: Any) -> dict[str, Any]:
    data = [base64.b64encode(file).decode("ascii") for file in files]
    return {"inputs": [{"name": name, "shape": [len(files)], "datatype": "BYTES", "data": data}], **fields}


def _error(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "error_type"} and body["error_type"] == error_type, body
    assert isinstance(body["error"], str) and body["error"].endswith("."), body
    return str(body["error"])


def test_error_shapes(client: TestClient, brain_png: bytes) -> None:
    infer = "/v2/models/tiny-4class/infer"
    assert "There is no model" in _error(
        client.post("/v2/models/resnet/infer", json={}), 404, "unknown_model"
    )
    assert "no version '7'" in _error(client.get("/v2/models/tiny-4class/versions/7"), 404, "unknown_model")
    assert "not valid JSON" in _error(client.post(infer, content=b"{"), 400, "bad_request")
    assert "'inputs'" in _error(client.post(infer, json={"outputs": []}), 422, "validation_error")
    wrong_name = client.post(infer, json=_infer_json([brain_png], name="pixels"))
    assert "no input 'pixels'" in _error(wrong_name, 422, "validation_error")
    request = _infer_json([brain_png])
    request["inputs"][0]["data"] = ["not base64!"]
    assert "not a base64 string" in _error(client.post(infer, json=request), 422, "validation_error")
    too_many = client.post(infer, json=_infer_json([brain_png] * 65))
    assert "must be 1 to 64" in _error(too_many, 422, "validation_error")
    pixels = {"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": [0.0]}]}
    assert "[N, 48, 48, 3]" in _error(client.post(infer, json=pixels), 422, "validation_error")
    unknown_output = client.post(infer, json=_infer_json([brain_png], outputs=[{"name": "label"}]))
    assert "no output 'label'" in _error(unknown_output, 422, "validation_error")
    header = {"Inference-Header-Content-Length": "999"}
    assert "must be the length" in _error(
        client.post(infer, content=b"{}", headers=header), 400, "bad_request"
    )
    brotli = {"Content-Encoding": "br"}
    assert "'br'" in _error(client.post(infer, content=b"{}", headers=brotli), 415, "unsupported_media_type")
    not_image = client.post(infer, json=_infer_json([b"hello"]))
    assert "not a recognised image" in _error(not_image, 400, "invalid_image")


def test_json_and_binary_answers_agree(
    client: TestClient, brain_png: bytes, encode_image: Callable[..., bytes]
) -> None:
    infer = "/v2/models/tiny-4class/infer"
    files = [brain_png, encode_image(np.full((60, 70, 3), 90, np.uint8), ".bmp")]
    as_json = client.post(infer, json=_infer_json(files, id="a"))
    assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
    outputs = {output["name"]: output for output in as_json.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [2, 4] and outputs["accepted"]["data"] == [True, True]
    # the same request with the files as binary tensor data, and every output in binary
    packed = b"".join(struct.pack("<I", len(file)) + file for file in files)
    header = json.dumps(
        {
            "inputs": [
                {"name": "image_bytes", "shape": [2], "datatype": "BYTES",
                 "parameters": {"binary_data_size": len(packed)}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()  # fmt: skip
    binary = client.post(
        infer, content=gzip.compress(header + packed),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Encoding": "gzip"},
    )  # fmt: skip
    assert binary.status_code == 200, binary.text
    length = int(binary.headers["inference-header-content-length"])
    answer = json.loads(binary.content[:length])
    assert answer["outputs"][0]["parameters"]["binary_data_size"] == 2 * 4 * 4
    probabilities = np.frombuffer(binary.content[length : length + 32], "<f4").reshape(2, 4)
    np.testing.assert_array_equal(probabilities, np.float32(outputs["probabilities"]["data"]).reshape(2, 4))


def test_api_keys_guard_the_model_routes_only(
    make_client: Callable[..., TestClient], brain_png: bytes
) -> None:
    key = "oip-test-key-0123456789"
    client = make_client(api_keys=[key])
    for route in ("/v2", "/v2/health/live", "/v2/health/ready"):
        assert client.get(route).status_code == 200, route
    assert client.get("/v2/models/tiny-4class").status_code == 401
    assert client.get("/v2/models/tiny-4class/ready").status_code == 401
    refused = client.post("/v2/models/tiny-4class/infer", json=_infer_json([brain_png]))
    _error(refused, 401, "unauthorized")
    allowed = client.post(
        "/v2/models/tiny-4class/infer", json=_infer_json([brain_png]), headers={"X-API-Key": key}
    )
    assert allowed.status_code == 200, allowed.text


def test_enforced_input_validity_refuses_the_batch(client: TestClient, brain_png: bytes) -> None:
    served = client.app.state.repository.models["tiny-4class"]  # type: ignore[attr-defined]
    served.manifest["input_validity"]["threshold"] = -1.0  # every image fails this app's check
    refused = client.post("/v2/models/tiny-4class/infer", json=_infer_json([brain_png, brain_png]))
    assert "2 of the 2 images" in _error(refused, 422, "not_brain_mri")
    assert refused.json()["in_distribution"]["accepted"] is False


def test_unenforced_input_validity_answers_with_the_flag(
    make_client: Callable[..., TestClient], brain_png: bytes
) -> None:
    client = make_client(input_validity=False)
    client.app.state.repository.models["tiny-4class"].manifest["input_validity"]["threshold"] = -1.0  # type: ignore[attr-defined]
    answer = client.post("/v2/models/tiny-4class/infer", json=_infer_json([brain_png]))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["parameters"] == {
        "input_validity_checked": True, "input_validity_enforced": False, "ood_threshold": -1.0,
    }  # fmt: skip
    assert {o["name"]: o["data"] for o in body["outputs"]}["accepted"] == [False]


def test_overload_and_not_ready(make_client: Callable[..., TestClient], brain_png: bytes) -> None:
    client = make_client(max_concurrency=1, queue_timeout_s=0.0)
    infer = "/v2/models/tiny-4class/infer"
    state = client.app.state  # type: ignore[attr-defined]
    slot = state.inference.limiter.slot()
    assert client.portal is not None
    client.portal.call(slot.__aenter__)  # the one prediction slot is taken
    try:
        busy = client.post(infer, json=_infer_json([brain_png]))
        _error(busy, 429, "overloaded")
        assert busy.headers["retry-after"] == "1"
    finally:
        client.portal.call(slot.__aexit__, None, None, None)
    served = state.repository.models["tiny-4class"]
    served.ready = False
    try:
        _error(client.post(infer, json=_infer_json([brain_png])), 503, "not_ready")
        _error(client.get("/v2/models/tiny-4class/ready"), 503, "not_ready")
        _error(client.get("/v2/health/ready"), 503, "not_ready")
    finally:
        served.ready = True


def test_a_body_over_the_upload_limit_is_refused(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=4096)
    big = _infer_json([bytes(200_000)])
    _error(client.post("/v2/models/tiny-4class/infer", json=big), 413, "upload_too_large")
    bomb = gzip.compress(json.dumps(_infer_json([bytes(200_000)])).encode())
    assert len(bomb) < 4096
    refused = client.post("/v2/models/tiny-4class/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert "inflates to more than" in _error(refused, 413, "upload_too_large")


def test_draining_makes_the_models_not_ready(client: TestClient) -> None:
    state = client.app.state  # type: ignore[attr-defined]
    state.draining = True  # what the server sets on SIGTERM
    try:
        assert "shutting down" in _error(client.get("/v2/models/tiny-4class/ready"), 503, "not_ready")
    finally:
        state.draining = False
    assert client.get("/v2/models/tiny-4class/ready").status_code == 200


# Dynamic batching (service/oip_batching.py).


class _CountingModel:
    """A stand-in for ServedModel: each image (1, 1, 1) holds its id; runs are recorded."""

    name = "counting"
    version = "1"

    def __init__(self, fail: bool = False) -> None:
        self.runs: list[int] = []
        self.fail = fail

    def run(self, batch: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        self.runs.append(len(batch))
        if self.fail:
            raise RuntimeError("the graph failed")
        ids = batch.reshape(len(batch), 1)
        return np.concatenate([ids, -ids], axis=1), ids.reshape(-1) * 10


def _gather(model: Any, sizes: list[int], max_batch_size: int, cancel: int | None = None) -> list[Any]:
    async def scenario() -> list[Any]:
        batcher = DynamicBatcher(
            PredictionLimiter(2, 1.0), max_batch_size=max_batch_size, max_queue_delay_s=0.05
        )
        first = 0
        tasks = []
        for size in sizes:
            pixels = np.arange(first, first + size, dtype=np.float32).reshape(size, 1, 1, 1)
            tasks.append(asyncio.ensure_future(batcher.run(model, pixels)))
            first += size
        await asyncio.sleep(0)
        if cancel is not None:
            tasks[cancel].cancel()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    return asyncio.run(scenario())


def test_the_batcher_gathers_concurrent_requests_into_one_run() -> None:
    model = _CountingModel()
    answers = _gather(model, [1, 2, 1], max_batch_size=8)
    assert model.runs == [4]
    assert [answer.probabilities[:, 0].tolist() for answer in answers] == [[0.0], [1.0, 2.0], [3.0]]
    assert answers[1].scores.tolist() == [10.0, 20.0] and {a.batch_size for a in answers} == {4}


def test_the_batcher_runs_no_more_than_max_batch_size_unless_one_request_is_larger() -> None:
    model = _CountingModel()
    answers = _gather(model, [1, 1, 1, 3, 1], max_batch_size=2)
    assert sorted(model.runs) == [1, 1, 2, 3]  # the full gatherings run at once, in any order
    assert [a.probabilities[:, 0].tolist() for a in answers] == [[0.0], [1.0], [2.0], [3.0, 4.0, 5.0], [6.0]]


def test_the_batcher_fails_every_request_of_a_failed_run_and_survives_a_cancelled_one() -> None:
    failed = _gather(_CountingModel(fail=True), [1, 1], max_batch_size=8)
    assert all(isinstance(answer, RuntimeError) for answer in failed)
    model = _CountingModel()
    answers = _gather(model, [1, 1, 1], max_batch_size=8, cancel=1)
    assert model.runs == [3] and isinstance(answers[1], asyncio.CancelledError)
    assert answers[2].probabilities[:, 0].tolist() == [2.0]


def test_dynamic_batching_answers_as_without_it(
    client: TestClient, model_repository: Path, brain_png: bytes
) -> None:
    app = create_app(
        Settings(model_repository=model_repository, oip_max_queue_delay_ms=20.0, oip_max_batch_size=4)
    )
    with TestClient(app) as batching:
        wait_until_ready(batching)
        gathered = batching.post("/v2/models/tiny-4class/infer", json=_infer_json([brain_png] * 2))
    plain = client.post("/v2/models/tiny-4class/infer", json=_infer_json([brain_png] * 2))
    assert gathered.status_code == plain.status_code == 200, gathered.text
    assert gathered.json()["parameters"]["dynamic_batch_size"] == 2
    assert "dynamic_batch_size" not in plain.json()["parameters"]
    assert gathered.json()["outputs"] == plain.json()["outputs"]
