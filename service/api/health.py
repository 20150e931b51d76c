"""``GET /health/live`` and ``GET /health/ready`` for orchestrators (never authenticated).

Readiness is 503 while the models load and warm up, and again from the moment the server got SIGTERM
(``app.state.draining``, set by :class:`service.server.GracefulServer`): a balancer then stops sending new
requests while the replica finishes the ones it has. Liveness stays 200 until the process ends.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.api.responses import error_responses
from service.errors import NotReadyError
from service.model_repository import ModelRepository
from service.schemas import LivenessResponse, ModelReadiness, ReadinessResponse

router = APIRouter(prefix="/health", tags=["health"])


def is_draining(app: Any) -> bool:
    """Whether the server is shutting down (SIGTERM received): every readiness route must then answer 503."""
    return bool(getattr(app.state, "draining", False))


@router.get("/live", summary="Liveness", operation_id="live", response_model=LivenessResponse)
async def live() -> LivenessResponse:
    """200 whenever the process answers."""
    return LivenessResponse(status="alive")


@router.get(
    "/ready",
    summary="Readiness",
    operation_id="ready",
    response_model=ReadinessResponse,
    responses=error_responses(503),
)
async def ready(request: Request) -> ReadinessResponse:
    """200 once every model is loaded and warmed; 503 until then (send no predictions before)."""
    # and 503 again from SIGTERM on (this docstring is the route's description in the committed openapi.json)
    if is_draining(request.app):
        raise NotReadyError("The service is shutting down; send new requests to another replica.")
    repository: ModelRepository | None = getattr(request.app.state, "repository", None)
    if repository is None:
        raise NotReadyError("The model repository is still loading.")
    if repository.warm_up_error is not None:
        raise NotReadyError(repository.warm_up_error)
    if not repository.ready:
        waiting = [name for name, model in repository.models.items() if not model.ready]
        raise NotReadyError(f"Still warming up: {', '.join(waiting)}.")
    return ReadinessResponse(
        status="ready",
        models=[
            ModelReadiness(name=model.name, version=model.version, ready=model.ready)
            for model in repository.models.values()
        ],
    )
