"""``create_app(settings)``: the FastAPI application, its lifespan and its middleware."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Final

import anyio
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from service import web
from service.api import health, metrics, models, predict, series, v2
from service.errors import install_error_handlers
from service.explanations import GradcamEngines
from service.inference import InferenceService, PredictionLimiter
from service.metrics import ServiceMetrics
from service.middleware import (
    ApiKeyBeforeUploadMiddleware,
    BodyDeadlineMiddleware,
    RequestObservationMiddleware,
    UploadLimitMiddleware,
)
from service.model_repository import ModelRepository, ServedModel, SessionConfig, open_model_repository
from service.schemas import DISCLAIMER
from service.settings import Settings

DOCS_STATIC_URL = "/ui/static/docs"
"""Where Swagger UI's and ReDoc's own files are served from (the fastapi-offline package)."""
logger = logging.getLogger("service")

TITLE: Final = "Brain-tumour MRI classification service"
DESCRIPTION: Final = f"""
Classifies one brain MRI slice per request (glioma, meningioma, pituitary tumour or no tumour, depending on
the model) with an ONNX model, and can explain the answer with a Grad-CAM heat map.

**{DISCLAIMER}**

- Send the image to `POST /predict` as `multipart/form-data` in the field `file`: JPEG, PNG, BMP, TIFF or a
  single-frame DICOM file, decoded by content. The service applies the model's own preprocessing.
- `GET /models` lists the models and their classes; `?model=` picks one, otherwise the default answers.
- Every error is JSON `{{"error": "<sentence>", "error_type": "<kind>"}}`; each route lists its statuses.
- Each answer carries an `X-Request-ID` header (yours, if you sent a sane one); quote it in problem reports.
- When the operator configured API keys, `/predict` and `/models` need the `X-API-Key` header; `/health/*` and
  `/metrics` never do.
"""
TAGS: Final = [
    {"name": "prediction", "description": "Classify an MRI slice, optionally with Grad-CAM."},
    {"name": "models", "description": "The models served, with their manifests and evaluation figures."},
    {"name": "health", "description": "Liveness and readiness probes."},
    {"name": "operations", "description": "Prometheus metrics."},
    {
        "name": "hospital integration",
        "description": "DICOM series in, DICOM SR and heat maps back to a PACS.",
    },
    {
        "name": "open inference protocol",
        "description": "The KServe v2 / Triton HTTP protocol: metadata, readiness and batched inference.",
    },
]


def service_version() -> str:
    try:
        return version("brain-tumour-mri-inference")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings | None = None, *, repository: ModelRepository | None = None) -> FastAPI:
    """The application; its lifespan opens the model repository at ``settings.model_repository``.

    ``repository`` (already opened, e.g. by ``python -m service`` to fail before uvicorn starts) is used as
    is.
    The lifespan raises :class:`~service.model_repository.ModelRepositoryError` when the repository cannot be
    served; the warm-up runs in the background and ``/health/ready`` answers 503 until it is done.
    """
    settings = settings or Settings()
    service_metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = repository
        if opened is None:
            opened = await anyio.to_thread.run_sync(
                open_model_repository,
                settings.model_repository,
                settings.default_model,
                SessionConfig(
                    settings.ort_intra_op_threads, settings.ort_inter_op_threads, settings.ort_allow_spinning
                ),
            )
        for model in opened.models.values():
            logger.info(
                "serving model %s %s on %s",
                model.name,
                model.version,
                model.provider,
                extra={"model": model.name, "version": model.version, "providers": [model.provider]},
            )
            service_metrics.model_info.labels(
                model=model.name, version=model.version, sha256=model.onnx_sha256, provider=model.provider
            ).set(1)
        gradcam_engines = GradcamEngines()
        app.state.inference = InferenceService(
            metrics=service_metrics,
            limiter=PredictionLimiter(settings.max_concurrency, settings.queue_timeout_s),
            gradcam_engines=gradcam_engines,
            max_pixels=settings.max_pixels,
            max_decode_bytes=settings.max_decode_mib * 2**20,
            enforce_input_validity=settings.input_validity,
        )
        app.state.repository = opened
        _warn_if_exposed(settings)
        async with anyio.create_task_group() as tasks:
            # with Grad-CAM on by default (or preloaded), the Keras twins are loaded and traced before ready
            preload = settings.gradcam_default or settings.gradcam_preload
            warm_gradcam = gradcam_engines.warm_up if preload else None
            tasks.start_soon(_warm_up, opened, warm_gradcam)
            yield
            tasks.cancel_scope.cancel()
        app.state.repository = None

    # Swagger UI and ReDoc from files shipped in the fastapi-offline package: /docs works without internet
    app = FastAPIOffline(
        static_url=DOCS_STATIC_URL,
        title=TITLE,
        description=DESCRIPTION,
        version=service_version(),
        openapi_tags=TAGS,
        lifespan=lifespan,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
    )
    app.state.settings = settings
    app.state.metrics = service_metrics
    app.state.repository = None
    app.state.inference = None
    install_error_handlers(app)
    # innermost first: the key is checked at the first receive, before the upload limit counts any byte
    app.add_middleware(ApiKeyBeforeUploadMiddleware, api_keys=settings.api_keys)
    app.add_middleware(
        UploadLimitMiddleware,
        max_upload_bytes=settings.max_upload_bytes,
        path_limits={"/predict/series": settings.series_max_bytes},
    )
    app.add_middleware(BodyDeadlineMiddleware, body_timeout_s=settings.body_timeout_s)
    app.add_middleware(RequestObservationMiddleware, metrics=service_metrics)  # outermost: sees every answer
    api = (predict.router, series.router, models.router, health.router, metrics.router, v2.router)
    for router in (*api, web.router):
        app.include_router(router)
    app.mount(web.STATIC_URL, web.static_files(), name="ui-static")
    return app


async def _warm_up(repository: ModelRepository, before_ready: Callable[[ServedModel], None] | None) -> None:
    await anyio.to_thread.run_sync(repository.warm_up, before_ready, abandon_on_cancel=True)
    if repository.ready:
        logger.info("ready: %s", ", ".join(repository.models))


def _warn_if_exposed(settings: Settings) -> None:
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback and not settings.api_keys:
        logger.warning(
            "listening on %s without API keys: anyone on the network can use the service", settings.host
        )
