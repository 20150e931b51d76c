"""GET /metrics counts what happened, under the contract's names and labels."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.manifest import load_entry


def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics as {(name, labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_requests_predictions_stages_and_errors_are_counted(client: TestClient, brain_png: bytes) -> None:
    labels = []
    for _ in range(3):
        response = client.post("/predict", files={"file": ("x.png", brain_png)})
        labels.append(response.json()["label"])
    client.post("/predict", files={"file": ("x.png", brain_png)}, params={"gradcam": "true"})
    client.post("/predict", files={"file": ("x.txt", b"hello")})
    client.post("/predict", files={"file": ("x.png", brain_png)}, params={"model": "nope"})
    client.get("/models/nope")
    client.get("/nowhere")
    found = samples(client)

    assert value(found, "mri_predictions_total", model="tiny-4class", label=labels[0]) == 4
    assert value(found, "mri_request_duration_seconds_count", route="/predict", status="200") == 4
    assert value(found, "mri_request_duration_seconds_count", route="/predict", status="400") == 1
    assert value(found, "mri_request_duration_seconds_count", route="/predict", status="404") == 1
    assert value(found, "mri_request_duration_seconds_count", route="/models/{name}", status="404") == 1
    assert value(found, "mri_request_duration_seconds_count", route="unmatched", status="404") == 1
    assert (
        value(found, "mri_inference_duration_seconds_count", model="tiny-4class", version="0.0.1-test") == 4
    )
    for stage in ("decode", "preprocess", "inference"):
        assert value(found, "mri_stage_duration_seconds_count", model="tiny-4class", stage=stage) == 4
    assert value(found, "mri_stage_duration_seconds_count", model="tiny-4class", stage="gradcam") == 1
    assert value(found, "mri_request_errors_total", error_type="invalid_image") == 1
    assert value(found, "mri_request_errors_total", error_type="unknown_model") == 2
    assert value(found, "mri_request_errors_total", error_type="not_found") == 1
    assert value(found, "mri_inflight_requests") == 1  # the /metrics request itself


def test_model_info_names_version_sha256_and_provider(client: TestClient, model_repository: Path) -> None:
    found = samples(client)
    for name in ("tiny-4class", "tiny-binary"):
        sha256 = load_entry(model_repository / name)["onnx"]["sha256"]
        info = {"model": name, "version": "0.0.1-test", "sha256": sha256, "provider": "CPUExecutionProvider"}
        assert value(found, "mri_model_info", **info) == 1


def test_every_contract_metric_is_exposed(client: TestClient) -> None:
    text = client.get("/metrics").text
    for name in (
        "mri_inference_duration_seconds",
        "mri_stage_duration_seconds",
        "mri_request_duration_seconds",
        "mri_predictions_total",
        "mri_request_errors_total",
        "mri_inflight_requests",
        "mri_model_info",
    ):
        assert f"# TYPE {name.removesuffix('_total')} " in text or f"# HELP {name}" in text, name
