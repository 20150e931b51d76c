"""The service's settings: one class, read once from ``MRI_*`` environment variables (or passed by tests)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.preprocessing import DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_PIXELS

ENV_PREFIX: Final = "MRI_"
MODEL_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_API_KEY_LENGTH: Final = 16


class Settings(BaseSettings):
    """Everything an operator can set; each field is read from ``MRI_<FIELD NAME IN CAPITALS>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )

    model_repository: Path = Path("models")
    """Folder of model entries (``<name>/manifest.json``, ``model.onnx``, ``model.keras``); all are served."""

    default_model: str | None = None
    """Model that answers when a request names none; unset: the first 4-class entry by name, else the first
    entry."""

    host: str = "127.0.0.1"
    """Interface that ``python -m service`` listens on (``0.0.0.0`` exposes it to the network)."""

    port: int = Field(default=8000, ge=1, le=65535)
    """TCP port that ``python -m service`` listens on."""

    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=1024**3)
    """Largest accepted upload in bytes; a bigger body is refused with 413 before it is read."""

    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=64, le=500_000_000)
    """Largest accepted width * height, checked in the image header before decoding (decompression bombs)."""

    max_decode_mib: int = Field(default=DEFAULT_MAX_DECODE_BYTES // 2**20, ge=1, le=16 * 1024)
    """Memory budget of one decode in MiB, estimated before decoding from what the container and the
    codestream declare: for JPEG, PNG, BMP and TIFF the whole peak of the decode (the decoder's array and
    working buffers and the conversion's copies); for DICOM the decoded frame (the float32 working copy comes
    on top); past it, 413."""

    ort_intra_op_threads: int = Field(default=0, ge=0, le=256)
    """ONNX Runtime threads inside one operator; 0 lets ONNX Runtime choose (one per physical core)."""

    ort_inter_op_threads: int = Field(default=0, ge=0, le=256)
    """ONNX Runtime threads across independent operators; 0 lets ONNX Runtime choose."""

    ort_allow_spinning: bool = False
    """Whether idle ONNX Runtime threads busy-wait for the next operator: lower latency for one request at a
    time, but the spinning takes CPU from decoding, preprocessing and HTTP under concurrent load."""

    gradcam_default: bool = False
    """Whether /predict returns a Grad-CAM heat map when the request does not say."""

    gradcam_preload: bool = False
    """Whether the Keras twins are loaded and traced before the service reports ready (always so when
    ``gradcam_default`` is on): the first Grad-CAM then answers at once instead of after TensorFlow's import
    and a trace (seconds to tens of seconds), at the price of a later readiness and more resident memory."""

    input_validity: bool = True
    """Refuse (422 ``not_brain_mri``) an upload whose input-validity score is above its model's threshold.
    false is for research only: every answer is then given, and its ``in_distribution.enforced`` says the
    check was off."""

    max_concurrency: int = Field(default=4, ge=1, le=256)
    """Predictions that run at once; the others wait for a free slot."""

    queue_timeout_s: float = Field(default=2.0, ge=0.0, le=300.0)
    """Seconds a prediction waits for a free slot before the service answers 429 (overloaded)."""

    header_timeout_s: float = Field(default=10.0, gt=0.0, le=600.0)
    """Seconds a connection has to deliver a request line and headers, counted from its opening or from the
    end of its previous response; a slower (or silent) client gets 408 and the connection is closed."""

    body_timeout_s: float = Field(default=30.0, gt=0.0, le=3600.0)
    """Seconds a request has to deliver its whole body once its headers are in (a 20 MiB upload needs
    ~0.7 MiB/s); a slower one gets 408 ``request_timeout`` and the connection is closed."""

    keep_alive_s: float = Field(default=5.0, gt=0.0, le=600.0)
    """Seconds an idle keep-alive connection stays open after a response when nothing arrives."""

    max_connections: int = Field(default=256, ge=1, le=100_000)
    """Open connections the server keeps; one more gets 503 ``overloaded`` with Retry-After and is closed."""

    series_max_instances: int = Field(default=1000, ge=1, le=100_000)
    """Most slices in one ``/predict/series`` request or one analysed study (a frame of a multi-frame object
    counts as one); 413 past it."""

    series_max_bytes: int = Field(default=512 * 2**20, ge=1024, le=16 * 1024**3)
    """Most DICOM bytes in one ``/predict/series`` request (ZIP members counted inflated) or one analysed
    study; 413 past it. The request body of ``/predict/series`` is allowed this size instead of
    ``max_upload_bytes``."""

    series_batch_size: int = Field(default=16, ge=1, le=256)
    """Slices per ONNX Runtime run in series mode; each batch holds one prediction slot."""

    series_min_tumour_slices: int = Field(default=2, ge=1, le=10_000)
    """k: the slices with a tumour label that a series needs for a tumour finding (capped at its valid
    slices)."""

    dicomweb_url: str | None = None
    """The PACS's DICOMweb root (e.g. ``https://pacs.example.org/dicom-web``); unset, the analyse endpoint
    answers 503 ``pacs_not_configured``."""

    dicomweb_auth_header: SecretStr | None = None
    """The ``Authorization`` value sent to the PACS (``Bearer ...`` or ``Basic ...``); never logged."""

    dicomweb_ca_bundle: Path | None = None
    """CA bundle that verifies the PACS's TLS certificate (unset: the system's CAs)."""

    dicomweb_timeout_s: float = Field(default=30.0, gt=0.0, le=600.0)
    """Timeout of each DICOMweb call; 504 past it."""

    oip_max_queue_delay_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    """Dynamic batching of ``/v2/models/{name}/infer``: how long concurrent requests are gathered into one
    ONNX Runtime run; 0 (the default) is off. On this project's 2-core CPU it lowered throughput
    (docs/operations.md)."""

    oip_max_batch_size: int = Field(default=8, ge=1, le=64)
    """Dynamic batching: the most images gathered into one run."""

    shutdown_drain_s: float = Field(default=0.0, ge=0.0, le=300.0)
    """Seconds the server keeps accepting and serving requests after SIGTERM while /health/ready already
    answers 503, so that a balancer (haproxy's checks, Kubernetes' endpoints) stops sending before connections
    are refused; 0: stop listening at once. The Kubernetes manifests set 5."""

    shutdown_grace_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    """Seconds the requests in flight have to finish once the server stops listening after SIGTERM (rounded
    up to whole seconds); what is left is then cancelled and the process exits 0. Keep drain + grace below the
    orchestrator's kill timeout (Kubernetes: terminationGracePeriodSeconds)."""

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Accepted ``X-API-Key`` values (comma-separated or a JSON list); empty: no authentication."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level of the JSON log lines written to stderr."""

    @field_validator("default_model")
    @classmethod
    def _check_default_model(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_NAME_PATTERN.fullmatch(value):
            raise ValueError("a model name is 1-64 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if not value or any(char.isspace() or char in "/@" for char in value):
            raise ValueError("give a host name or IP address, e.g. 127.0.0.1")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)  # a JSON list, as pydantic-settings would decode it
            return [key.strip() for key in text.split(",") if key.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            secret = key.get_secret_value()
            if len(secret) < MIN_API_KEY_LENGTH or any(char.isspace() for char in secret):
                raise ValueError(
                    f"each API key must be at least {MIN_API_KEY_LENGTH} characters without spaces, "
                    "so that it cannot be guessed"
                )
        return keys


def describe_settings_error(error: ValidationError) -> str:
    """One sentence naming the environment variable(s) at fault, e.g. for ``python -m service`` on stderr."""
    parts = []
    for problem in error.errors(include_url=False):
        field = str(problem["loc"][0]) if problem["loc"] else "settings"
        message = str(problem["msg"]).removeprefix("Value error, ")
        parts.append(f"{ENV_PREFIX}{field.upper()} is invalid ({message})")
    return "The service cannot start: " + "; ".join(parts) + "."
