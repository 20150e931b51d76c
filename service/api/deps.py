"""Typed dependencies: the objects the lifespan created, handed to routes through ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from service.auth import API_KEY_HEADER, check_api_key
from service.errors import NotReadyError
from service.inference import InferenceService
from service.metrics import ServiceMetrics
from service.model_repository import ModelRepository
from service.request_context import RequestContext, request_context_of
from service.settings import Settings

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    description="One of the keys in MRI_API_KEYS; required only when the service is configured with keys.",
    auto_error=False,
)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def get_repository(request: Request) -> ModelRepository:
    repository: ModelRepository | None = getattr(request.app.state, "repository", None)
    if repository is None:
        raise NotReadyError("The model repository is not loaded yet; retry when /health/ready answers 200.")
    return repository


async def get_inference(request: Request) -> InferenceService:
    inference: InferenceService | None = getattr(request.app.state, "inference", None)
    if inference is None:
        raise NotReadyError("The service is still starting; retry when /health/ready answers 200.")
    return inference


async def get_request_context(request: Request) -> RequestContext:
    return request_context_of(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
InferenceDep = Annotated[InferenceService, Depends(get_inference)]
RequestContextDep = Annotated[RequestContext, Depends(get_request_context)]


async def require_api_key(
    settings: SettingsDep, api_key: Annotated[str | None, Security(api_key_header)]
) -> None:
    """401 unless API keys are off or ``X-API-Key`` is one of them (compared in constant time)."""
    check_api_key(settings.api_keys, api_key)
