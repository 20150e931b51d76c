"""The Open Inference Protocol (KServe v2 / Triton HTTP/REST) beside ``/predict``: health, metadata and
inference on the same models, for clients that speak the protocol (tritonclient, KServe's).

The codec and its choices (BYTES in base64 or binary, input validity, errors) are in service/oip.py. The
server routes (``/v2``, ``/v2/health/*``) need no API key, like ``/health/*``; the model routes do, like
``/predict`` and ``/models``. The inference route reads its body itself, after the key was checked, so that
an unauthenticated client cannot make the service read an upload.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any, Final

import anyio
from fastapi import APIRouter, Depends, Path, Request, Response

from service.api import health
from service.api.deps import InferenceDep, RepositoryDep, RequestContextDep, SettingsDep, require_api_key
from service.api.responses import error_responses
from service.errors import NotReadyError
from service.inference import InferenceService
from service.model_repository import ModelRepository, ServedModel
from service.oip import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    BatchInput,
    BatchResult,
    batch_result,
    check_version,
    decompress,
    encode_response,
    model_metadata,
    parse_infer_request,
    prepare_batch,
    refuse_invalid_inputs,
    run_batch,
    server_metadata,
)
from service.oip_batching import DynamicBatcher
from service.oip_schemas import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)
from service.request_context import RequestContext
from service.settings import Settings

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

KEY: Final = [Depends(require_api_key)]
INLINE_PARSE_BYTES: Final = 256 * 1024
"""Bodies up to this size are parsed on the event loop (well under a millisecond for a few encoded slices):
cheaper than the hop to a worker thread."""
ModelName = Annotated[
    str, Path(description="Name of the model, as listed by GET /models.", examples=["sartaj-4class"])
]
ModelVersion = Annotated[
    str, Path(description="Version of the model: the one in its manifest (see its metadata).", examples=["1"])
]


def _inline_schema(model: type[InferenceRequest]) -> dict[str, Any]:
    """``model``'s JSON schema with its nested models written in place: the route reads its body itself, so
    FastAPI does not add the request's models to the components."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve({**definitions[reference.removeprefix("#/$defs/")], **node, "$ref": None})
            return {key: resolve(value) for key, value in node.items() if key != "$ref"}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


INFER_BODY: Final = {
    "requestBody": {
        "required": True,
        "description": (
            "The protocol's inference request as JSON; or, with the binary tensor data extension, that JSON "
            f"followed by the raw tensors and its length in the {HEADER_LENGTH} header."
        ),
        "content": {"application/json": {"schema": _inline_schema(InferenceRequest)}},
    }
}
INFER_RESPONSES: Final = {
    200: {
        "model": InferenceResponse,
        "description": (
            f"The outputs; when binary outputs were asked for, the JSON header is followed by them and the "
            f"{HEADER_LENGTH} header gives its length ({BINARY_CONTENT_TYPE})."
        ),
    },
    **error_responses(400, 401, 404, 408, 413, 415, 422, 429, 500, 503),
}


@router.get(
    "",
    summary="Server metadata",
    operation_id="oipServerMetadata",
    response_model=ServerMetadataResponse,
)
async def get_server_metadata() -> ServerMetadataResponse:
    """The server's name, version and the protocol extensions it supports."""
    return server_metadata()


@router.get(
    "/health/live",
    summary="Server live (protocol)",
    operation_id="oipServerLive",
    response_model=ServerLiveResponse,
)
async def server_live() -> ServerLiveResponse:
    """200 whenever the process answers."""
    return ServerLiveResponse(live=True)


@router.get(
    "/health/ready",
    summary="Server ready (protocol)",
    operation_id="oipServerReady",
    response_model=ServerReadyResponse,
    responses=error_responses(503),
)
async def server_ready(request: Request) -> ServerReadyResponse:
    """200 once every model is loaded and warmed, as /health/ready; 503 until then and while shutting down."""
    await health.ready(request)  # one readiness for both protocols: raises NotReadyError with its reason
    return ServerReadyResponse(ready=True)


def _model(repository: ModelRepository, name: str, version: str | None) -> ServedModel:
    served = repository.get(name)
    check_version(served, version)
    return served


@router.get(
    "/models/{name}",
    summary="Model metadata",
    operation_id="oipModelMetadata",
    response_model=ModelMetadataResponse,
    dependencies=KEY,
    responses=error_responses(401, 404, 422, 503),
)
async def get_model_metadata(
    name: ModelName, repository: RepositoryDep, inference: InferenceDep
) -> ModelMetadataResponse:
    """The model's inputs and outputs, with its classes and input-validity threshold as parameters."""
    return model_metadata(_model(repository, name, None), inference.enforce_input_validity)


@router.get(
    "/models/{name}/versions/{version}",
    summary="Model metadata of one version",
    operation_id="oipModelVersionMetadata",
    response_model=ModelMetadataResponse,
    dependencies=KEY,
    responses=error_responses(401, 404, 422, 503),
)
async def get_model_version_metadata(
    name: ModelName, version: ModelVersion, repository: RepositoryDep, inference: InferenceDep
) -> ModelMetadataResponse:
    """The metadata of the model, when ``version`` is the version served (404 otherwise)."""
    return model_metadata(_model(repository, name, version), inference.enforce_input_validity)


def _ready(request: Request, served: ServedModel) -> ModelReadyResponse:
    # a replica that got SIGTERM (``app.state.draining``, see service/api/health.py) is ready for nothing
    if getattr(request.app.state, "draining", False):
        raise NotReadyError("The service is shutting down; send new requests to another replica.")
    if not served.ready:
        raise NotReadyError(
            f"Model {served.name} is still warming up; retry when /v2/health/ready answers 200."
        )
    return ModelReadyResponse(name=served.name, ready=True)


@router.get(
    "/models/{name}/ready",
    summary="Model ready",
    operation_id="oipModelReady",
    response_model=ModelReadyResponse,
    dependencies=KEY,
    responses=error_responses(401, 404, 422, 503),
)
async def model_ready(name: ModelName, request: Request, repository: RepositoryDep) -> ModelReadyResponse:
    """200 once the model is loaded and warmed; 503 until then, 404 for an unknown model."""
    return _ready(request, _model(repository, name, None))


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model version ready",
    operation_id="oipModelVersionReady",
    response_model=ModelReadyResponse,
    dependencies=KEY,
    responses=error_responses(401, 404, 422, 503),
)
async def model_version_ready(
    name: ModelName, version: ModelVersion, request: Request, repository: RepositoryDep
) -> ModelReadyResponse:
    """200 once the model is loaded and warmed and ``version`` is the version served."""
    return _ready(request, _model(repository, name, version))


@router.post(
    "/models/{name}/infer",
    summary="Inference (protocol)",
    operation_id="oipInfer",
    response_model=None,
    dependencies=KEY,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_BODY,
)
async def infer(
    name: ModelName,
    request: Request,
    repository: RepositoryDep,
    inference: InferenceDep,
    settings: SettingsDep,
    context: RequestContextDep,
) -> Response:
    """Classify a batch of N images in one ONNX Runtime run: encoded files (BYTES input image_bytes, base64
    in JSON or raw with the binary tensor data extension) or preprocessed pixels (the FP32 input).

    While the input-validity check is enforced, a batch with any image that is not a brain MRI slice is
    refused whole (422 not_brain_mri). Research use only: the answer is not a medical diagnosis.
    """
    return await _infer(request, _model(repository, name, None), inference, settings, context)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference on one version (protocol)",
    operation_id="oipInferVersion",
    response_model=None,
    dependencies=KEY,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_BODY,
)
async def infer_version(
    name: ModelName,
    version: ModelVersion,
    request: Request,
    repository: RepositoryDep,
    inference: InferenceDep,
    settings: SettingsDep,
    context: RequestContextDep,
) -> Response:
    """The inference route, when ``version`` is the version served (404 otherwise)."""
    return await _infer(request, _model(repository, name, version), inference, settings, context)


async def _infer(
    request: Request,
    served: ServedModel,
    inference: InferenceService,
    settings: Settings,
    context: RequestContext,
) -> Response:
    started = time.perf_counter()
    context.model = served.name
    if not served.ready:
        raise NotReadyError(
            f"Model {served.name} is still warming up; retry when /v2/health/ready answers 200."
        )
    body = decompress(
        await request.body(), request.headers.get("content-encoding"), settings.max_upload_bytes
    )
    header_length = request.headers.get(HEADER_LENGTH)
    if len(body) <= INLINE_PARSE_BYTES:
        parsed = parse_infer_request(body, header_length, served)
    else:  # the JSON numbers or base64 of a large batch take milliseconds: off the event loop
        parsed = await anyio.to_thread.run_sync(parse_infer_request, body, header_length, served)
    batcher = _batcher(request, settings, inference)
    if batcher is None:
        run = partial(
            run_batch,
            served,
            parsed.input,
            max_pixels=inference.max_pixels,
            max_decode_bytes=inference.max_decode_bytes,
            enforce_input_validity=inference.enforce_input_validity,
        )
        async with inference.limiter.slot() as queue_s:
            result = await anyio.to_thread.run_sync(run)
        batch_size = None
    else:
        result, queue_s, batch_size = await _infer_gathered(batcher, served, parsed.input, inference)
    _observe(inference, served, result, parsed.input.files is not None, batched=batcher is not None)
    refuse_invalid_inputs(served, result)
    labels = result.labels(served)
    for label in labels:
        inference.metrics.predictions.labels(model=served.name, label=label).inc()
    context.label = labels[0] if len(labels) == 1 else None
    extra = None if batch_size is None else {"dynamic_batch_size": batch_size}
    content, json_length = encode_response(
        served, parsed.id, result, parsed.outputs, inference.enforce_input_validity, extra
    )
    timings = {
        "queue": queue_s,
        "decode": result.decode_s,
        "preprocess": result.preprocess_s,
        "inference": result.inference_s,
        "total": time.perf_counter() - started,
    }
    headers = {"Server-Timing": ", ".join(f"{stage};dur={s * 1000.0:.1f}" for stage, s in timings.items())}
    if json_length is None:
        return Response(content, media_type="application/json", headers=headers)
    headers[HEADER_LENGTH] = str(json_length)
    return Response(content, media_type=BINARY_CONTENT_TYPE, headers=headers)


def _observe(
    inference: InferenceService, served: ServedModel, result: BatchResult, decoded: bool, *, batched: bool
) -> None:
    metrics = inference.metrics
    if decoded:
        metrics.observe_stage(served.name, "decode", result.decode_s)
        metrics.observe_stage(served.name, "preprocess", result.preprocess_s)
    metrics.observe_stage(served.name, "inference", result.inference_s)
    if not batched:  # the batcher observes each of its runs once, not once per request
        metrics.inference_duration.labels(model=served.name, version=served.version).observe(
            result.inference_s
        )


def _batcher(request: Request, settings: Settings, inference: InferenceService) -> DynamicBatcher | None:
    """The app's dynamic batcher when the settings turn it on (``oip_max_queue_delay_ms`` > 0), else None.

    Made on first use, and again when the lifespan made a new limiter (a restarted app).
    """
    delay_ms = settings.oip_max_queue_delay_ms
    if delay_ms <= 0.0:
        return None
    batcher: DynamicBatcher | None = getattr(request.app.state, "oip_batcher", None)
    if batcher is None or batcher.limiter is not inference.limiter:
        batcher = DynamicBatcher(
            inference.limiter,
            max_batch_size=settings.oip_max_batch_size,
            max_queue_delay_s=delay_ms / 1000.0,
            metrics=inference.metrics,
        )
        request.app.state.oip_batcher = batcher
    return batcher


async def _infer_gathered(
    batcher: DynamicBatcher, served: ServedModel, batch: BatchInput, inference: InferenceService
) -> tuple[BatchResult, float, int]:
    """Decode and preprocess in a slot of our own, then run gathered with other requests: the result, the
    seconds spent waiting (for the slot, then for the gathered run to start) and the gathered batch's size."""
    prepare = partial(
        prepare_batch,
        served,
        batch,
        max_pixels=inference.max_pixels,
        max_decode_bytes=inference.max_decode_bytes,
    )
    async with inference.limiter.slot() as queue_s:
        prepared = await anyio.to_thread.run_sync(prepare)
    joined = time.perf_counter()
    run = await batcher.run(served, prepared.pixels)
    result = batch_result(
        served,
        prepared,
        run.probabilities,
        run.scores,
        inference_s=run.inference_s,
        enforce_input_validity=inference.enforce_input_validity,
    )
    return result, queue_s + max(0.0, run.started - joined), run.batch_size
