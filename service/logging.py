"""Structured logs: one JSON object per line on stderr, and one access line per request.

Only whitelisted fields are written (:data:`LOG_FIELDS`): never image bytes, never a DICOM attribute, so a
patient's name cannot reach the logs even by a careless ``extra=``. Python warnings become JSON lines too
(their text is dropped when they come from the DICOM libraries, whose warnings quote attribute values), and
what native libraries print straight to the stderr file descriptor while they load (TensorFlow's start-up
lines) is caught by :func:`native_stderr_to_log` and logged line by line as JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final, TextIO

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


QUIET_WARNING_SOURCES: Final = ("pydicom", "highdicom")
"""Packages whose warnings may quote DICOM attribute values: only their category and place are logged."""
warnings_logger = logging.getLogger("py.warnings")


def configure_logging(level: str) -> None:
    """Send every log record (the service's, uvicorn's, Python warnings) to stderr as JSON lines at
    ``level``; keep TensorFlow's native logging to errors."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "tensorflow", "absl"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TensorFlow loads (Grad-CAM only)
    warnings.showwarning = _log_warning


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` as one JSON line: the category and where; the text unless it may hold a
    DICOM value."""
    where = f"{os.path.basename(filename)}:{lineno}"
    quiet = any(f"{os.sep}{source}{os.sep}" in filename for source in QUIET_WARNING_SOURCES)
    text = "" if quiet else f": {str(message)[:300]}"
    warnings_logger.warning("%s at %s%s", category.__name__, where, text)


@contextlib.contextmanager
def native_stderr_to_log(source: str) -> Iterator[None]:
    """Catch what native code writes to file descriptor 2 inside the block and log it as JSON lines.

    Used around imports that print from C++ (TensorFlow's oneDNN and CPU-feature notices). Lines that are
    already JSON (this process's own log lines, written meanwhile by other threads) are passed through as
    they were; every other line becomes a record of the logger ``native.<source>``. It holds the process's one
    lock for swapping fd 2 (the image decoder swaps it too), so JPEG decodes wait while the block runs.
    """
    from service.preprocessing.decode import stderr_swap_lock

    with stderr_swap_lock(), tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured = sink.read().decode("utf-8", errors="replace")
        native = logging.getLogger(f"native.{source}")
        for text in captured.splitlines():
            if not text.strip():
                continue
            if is_json_object(text):
                sys.stderr.write(text + "\n")
            else:
                native.info("%s", text.strip()[:500])
        sys.stderr.flush()


def is_json_object(text: str) -> bool:
    """Whether a log line is one JSON object."""
    try:
        value: Any = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict)


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
