"""Settings come from MRI_* variables; unsafe values are refused with a sentence naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, describe_settings_error


def test_defaults() -> None:
    settings = Settings()
    assert settings.model_repository == Path("models")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    assert settings.default_model is None and settings.api_keys == [] and settings.gradcam_default is False


def test_every_field_is_documented() -> None:
    assert all(field.description for field in Settings.model_fields.values())


def test_values_come_from_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRI_MODEL_REPOSITORY", "/srv/models")
    monkeypatch.setenv("MRI_DEFAULT_MODEL", "mobilenetv2-4class")
    monkeypatch.setenv("MRI_PORT", "9000")
    monkeypatch.setenv("MRI_GRADCAM_DEFAULT", "true")
    monkeypatch.setenv("MRI_API_KEYS", "first-key-0123456789, second-key-0123456789")
    monkeypatch.setenv("MRI_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("MRI_DEFAULT_MODEL_UNRELATED", "ignored")
    settings = Settings()
    assert settings.model_repository == Path("/srv/models") and settings.default_model == "mobilenetv2-4class"
    assert settings.port == 9000 and settings.gradcam_default is True and settings.log_level == "debug"
    assert [key.get_secret_value() for key in settings.api_keys] == [
        "first-key-0123456789",
        "second-key-0123456789",
    ]
    assert "first-key" not in repr(settings)  # secrets stay out of logs and tracebacks


def test_api_keys_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRI_API_KEYS", '["json-key-0123456789"]')
    assert [key.get_secret_value() for key in Settings().api_keys] == ["json-key-0123456789"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MRI_PORT", "0"),
        ("MRI_PORT", "70000"),
        ("MRI_MAX_UPLOAD_BYTES", "0"),
        ("MRI_MAX_UPLOAD_BYTES", str(2 * 1024**3)),
        ("MRI_MAX_PIXELS", "10"),
        ("MRI_ORT_INTRA_OP_THREADS", "-1"),
        ("MRI_MAX_CONCURRENCY", "0"),
        ("MRI_QUEUE_TIMEOUT_S", "-1"),
        ("MRI_API_KEYS", "short"),
        ("MRI_API_KEYS", "a key with spaces in it"),
        ("MRI_DEFAULT_MODEL", "../etc"),
        ("MRI_HOST", "http://example.org/"),
        ("MRI_LOG_LEVEL", "chatty"),
        ("MRI_GRADCAM_DEFAULT", "perhaps"),
    ],
)
def test_unsafe_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    sentence = describe_settings_error(caught.value)
    assert sentence.startswith("The service cannot start: ") and f"{variable} is invalid" in sentence
    assert "\n" not in sentence and sentence.endswith(".")
