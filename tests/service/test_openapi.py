"""The committed openapi.json is the app's schema, and it documents every field and every error status."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.openapi_export import OPENAPI_PATH, REGENERATE_COMMAND, current_schema, render_schema
from service.schemas import DISCLAIMER

REPO_ROOT = Path(__file__).resolve().parents[2]
ERROR_STATUSES = {
    ("/predict", "post"): {"400", "401", "404", "408", "413", "415", "422", "429", "500", "503"},
    ("/models", "get"): {"401", "503"},
    ("/models/{name}", "get"): {"401", "404", "422", "503"},
    ("/health/ready", "get"): {"503"},
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return current_schema()


def test_committed_openapi_json_is_current(schema: dict[str, Any]) -> None:
    assert OPENAPI_PATH == REPO_ROOT / "openapi.json"
    committed = OPENAPI_PATH.read_text(encoding="utf-8") if OPENAPI_PATH.is_file() else ""
    assert committed == render_schema(schema), (
        f"openapi.json is stale: regenerate it with `{REGENERATE_COMMAND}` and commit it."
    )


def test_the_check_command_agrees(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    command = [sys.executable, "-m", "service.openapi_export", "--check"]
    result = subprocess.run([*command, "--output", str(stale)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and REGENERATE_COMMAND in result.stderr
    assert subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True).returncode == 0


def test_info_tags_and_disclaimer(schema: dict[str, Any]) -> None:
    info = schema["info"]
    assert info["title"] == "Brain-tumour MRI classification service"
    assert DISCLAIMER in info["description"] and info["version"]
    assert [tag["name"] for tag in schema["tags"]] == [
        "prediction", "models", "health", "operations", "hospital integration", "open inference protocol"
    ]  # fmt: skip
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation["tags"] and operation["summary"] and operation["description"], (path, method)
            assert operation["operationId"].isidentifier(), (path, method)


def test_every_error_status_is_documented_with_an_example(schema: dict[str, Any]) -> None:
    for (path, method), statuses in ERROR_STATUSES.items():
        responses = schema["paths"][path][method]["responses"]
        assert set(responses) - {"200"} == statuses, path
        for status in statuses:
            content = responses[status]["content"]["application/json"]
            body = "NotBrainMriResponse" if status == "422" else "ErrorResponse"
            assert content["schema"] == {"$ref": f"#/components/schemas/{body}"}
            assert content["examples"], (path, status)
            for name, example in content["examples"].items():
                extra = {"in_distribution"} if name == "not_brain_mri" else set()
                assert set(example["value"]) == {"error", "error_type"} | extra
    assert (
        "HTTPValidationError" not in schema["components"]["schemas"]
    )  # FastAPI's own 422 shape is never sent


def _properties(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, component in schema["components"]["schemas"].items():
        for field, spec in component.get("properties", {}).items():
            yield name, field, spec


def test_every_field_has_a_description_and_scalars_an_example(schema: dict[str, Any]) -> None:
    for name, field, spec in _properties(schema):
        assert spec.get("description"), f"{name}.{field} has no description"
        if spec.get("type") in ("string", "number", "integer", "boolean") and name != "Body_predict":
            assert spec.get("examples"), f"{name}.{field} has no example"
    predict = schema["paths"]["/predict"]["post"]
    assert all(p["description"] and p["schema"]["examples"] for p in predict["parameters"])
    assert "multipart/form-data" in predict["requestBody"]["content"]


def test_gradcam_class_field_is_called_class(schema: dict[str, Any]) -> None:
    assert "class" in schema["components"]["schemas"]["GradcamResponse"]["properties"]


def test_api_key_scheme_is_declared_on_protected_routes_only(schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    assert "MRI_API_KEYS" in scheme["description"]
    paths = schema["paths"]
    assert paths["/predict"]["post"]["security"] == [{"ApiKey": []}]
    assert paths["/models"]["get"]["security"] == [{"ApiKey": []}]
    assert "security" not in paths["/health/ready"]["get"] and "security" not in paths["/metrics"]["get"]


def test_schema_does_not_depend_on_the_environment(
    monkeypatch: pytest.MonkeyPatch, schema: dict[str, Any]
) -> None:
    monkeypatch.setenv("MRI_API_KEYS", "key-from-the-environment-0123")
    monkeypatch.setenv("MRI_MAX_UPLOAD_BYTES", "4096")
    assert current_schema() == schema
    assert "key-from-the-environment" not in json.dumps(schema)
