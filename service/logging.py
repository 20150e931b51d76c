"""Structured logs: one JSON object per line on stderr, and one access line per request.

Only whitelisted fields are written (:data:`LOG_FIELDS`): never image bytes, never a DICOM attribute, so a
patient's name cannot reach the logs even by a careless ``extra=``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Final

from service.request_context import RequestContext

ACCESS_LOGGER: Final = "service.access"
LOG_FIELDS: Final = (
    "request_id",
    "method",
    "route",
    "status",
    "model",
    "version",
    "label",
    "error_type",
    "latency_ms",
    "providers",
)

access_logger = logging.getLogger(ACCESS_LOGGER)


class JsonLogFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", <whitelisted extras>, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in LOG_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str) -> None:
    """Send every log record (the service's and uvicorn's) to stderr as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def log_request(context: RequestContext, *, method: str, route: str, status: int, latency_ms: float) -> None:
    """The access line of one request: id, route, model, label, status, latency (nothing from the upload)."""
    access_logger.info(
        "%s %s %d",
        method,
        route,
        status,
        extra={
            "request_id": context.request_id,
            "method": method,
            "route": route,
            "status": status,
            "model": context.model,
            "label": context.label,
            "error_type": context.error_type,
            "latency_ms": round(latency_ms, 2),
        },
    )
