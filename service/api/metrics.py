"""``GET /metrics``: the service's Prometheus series in the text exposition format (never authenticated)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import MetricsDep

router = APIRouter(tags=["operations"])

_EXAMPLE = (
    "# HELP mri_inference_duration_seconds ONNX Runtime run time of one prediction...\n"
    "# TYPE mri_inference_duration_seconds histogram\n"
    'mri_inference_duration_seconds_count{model="mobilenetv2-4class",version="1.0.0"} 42.0\n'
)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    operation_id="metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format 0.0.4.",
            "content": {"text/plain": {"example": _EXAMPLE}},
        }
    },
)
async def metrics(service_metrics: MetricsDep) -> Response:
    """Latency per model and stage, requests by route and status, predictions by label, errors by type."""
    return Response(content=service_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
