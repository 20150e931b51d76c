"""The one error hierarchy of the service and the one handler that turns any exception into its JSON body.

Every refusal answers ``{"error": "<a sentence a person understands>", "error_type": "<machine kind>"}``:
the service's own errors, the image decoder's :class:`ImageError` family, FastAPI's validation errors and
Starlette's HTTP exceptions (unknown route, wrong method) are all mapped here, in one place.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, ClassVar, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.preprocessing import (
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    NotBrainMriImageError,
    UnsupportedImageFormatError,
)
from service.request_context import REQUEST_ID_HEADER, request_context_of

logger = logging.getLogger("service.errors")


class ErrorType(StrEnum):
    """The closed vocabulary of ``error_type``: every refusal the service answers is one of these, with the
    status of :data:`ERROR_STATUS` (``openapi.json`` lists them as an enum)."""

    INVALID_IMAGE = "invalid_image"
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_MODEL = "unknown_model"
    NOT_FOUND = "not_found"
    STUDY_NOT_FOUND = "study_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    UPLOAD_TOO_LARGE = "upload_too_large"
    IMAGE_TOO_LARGE = "image_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    VALIDATION_ERROR = "validation_error"
    NOT_BRAIN_MRI = "not_brain_mri"
    OVERLOADED = "overloaded"
    INTERNAL_ERROR = "internal_error"
    PACS_ERROR = "pacs_error"
    NOT_READY = "not_ready"
    PACS_NOT_CONFIGURED = "pacs_not_configured"
    PACS_TIMEOUT = "pacs_timeout"
    HTTP_ERROR = "http_error"


ERROR_STATUS: Final[Mapping[ErrorType, int]] = {
    ErrorType.INVALID_IMAGE: 400,
    ErrorType.BAD_REQUEST: 400,
    ErrorType.UNAUTHORIZED: 401,
    ErrorType.UNKNOWN_MODEL: 404,
    ErrorType.NOT_FOUND: 404,
    ErrorType.STUDY_NOT_FOUND: 404,
    ErrorType.METHOD_NOT_ALLOWED: 405,
    ErrorType.REQUEST_TIMEOUT: 408,
    ErrorType.UPLOAD_TOO_LARGE: 413,
    ErrorType.IMAGE_TOO_LARGE: 413,
    ErrorType.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorType.VALIDATION_ERROR: 422,
    ErrorType.NOT_BRAIN_MRI: 422,
    ErrorType.OVERLOADED: 429,  # (the connection cap answers it with 503 before any request is read)
    ErrorType.INTERNAL_ERROR: 500,
    ErrorType.PACS_ERROR: 502,
    ErrorType.NOT_READY: 503,
    ErrorType.PACS_NOT_CONFIGURED: 503,
    ErrorType.PACS_TIMEOUT: 504,
    ErrorType.HTTP_ERROR: 400,  # any other status Starlette raises keeps its own
}
"""The status each error type is answered with."""

IMAGE_ERROR_TYPES: Final[Mapping[type[ImageError], ErrorType]] = {
    ImageDecodeError: ErrorType.INVALID_IMAGE,
    ImageTooLargeError: ErrorType.IMAGE_TOO_LARGE,
    UnsupportedImageFormatError: ErrorType.UNSUPPORTED_MEDIA_TYPE,
    NotBrainMriImageError: ErrorType.NOT_BRAIN_MRI,
}
"""The error type of each refusal of the image decoder (which knows nothing of HTTP)."""


def image_error_type(error: ImageError) -> ErrorType:
    """The error type of a decoder refusal (its nearest mapped class; a bare ImageError is invalid_image)."""
    for kind in type(error).__mro__:
        if kind in IMAGE_ERROR_TYPES:
            return IMAGE_ERROR_TYPES[kind]
    return ErrorType.INVALID_IMAGE


class ServiceError(Exception):
    """Base class of every refusal the service answers; subclasses fix ``error_type`` (its status follows
    from :data:`ERROR_STATUS`)."""

    error_type: ClassVar[ErrorType] = ErrorType.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        error_type: ErrorType | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # instance attributes shadow the class default only when given (ImageError and HTTPException mapping)
        if error_type is not None:
            self.error_type = ErrorType(error_type)  # type: ignore[misc]
        self.status_code = ERROR_STATUS[self.error_type] if status_code is None else status_code
        self.headers = dict(headers or {})

    def to_body(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": <sentence>, "error_type": <kind>}``."""
        return {"error": self.message, "error_type": self.error_type}


class UnauthorizedError(ServiceError):
    """HTTP 401 ``unauthorized``: API keys are configured and ``X-API-Key`` is not one of them."""

    error_type = ErrorType.UNAUTHORIZED


class UnknownModelError(ServiceError):
    """HTTP 404 ``unknown_model``: the requested model is not in the repository."""

    error_type = ErrorType.UNKNOWN_MODEL


class RouteNotFoundError(ServiceError):
    """HTTP 404 ``not_found``: no route at that path."""

    error_type = ErrorType.NOT_FOUND


class UploadTooLargeError(ServiceError):
    """HTTP 413 ``upload_too_large``: the request body is over the byte limit (refused before it is read)."""

    error_type = ErrorType.UPLOAD_TOO_LARGE


class RequestTimeoutError(ServiceError):
    """HTTP 408 ``request_timeout``: the body did not arrive in time; the connection is closed after it."""

    error_type = ErrorType.REQUEST_TIMEOUT

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class UnsupportedMediaTypeError(ServiceError):
    """HTTP 415 ``unsupported_media_type``: a body that is not multipart/form-data."""

    error_type = ErrorType.UNSUPPORTED_MEDIA_TYPE


class InvalidRequestError(ServiceError):
    """HTTP 422 ``validation_error``: a field or parameter is missing or invalid."""

    error_type = ErrorType.VALIDATION_ERROR


class NotBrainMriError(ServiceError):
    """HTTP 422 ``not_brain_mri``: the upload is not a brain MRI slice, so no tumour label is given.

    The input-validity check refused its pixels (the body then carries ``in_distribution``), or its DICOM
    attributes name another modality or body part (``in_distribution`` null).
    """

    error_type = ErrorType.NOT_BRAIN_MRI

    def __init__(self, message: str, in_distribution: Any = None) -> None:
        super().__init__(message)
        self.in_distribution = in_distribution

    def to_body(self) -> dict[str, Any]:
        """The error body plus ``in_distribution`` {checked, enforced, score, threshold, accepted} or null."""
        validity = self.in_distribution
        described = None
        if validity is not None:
            described = {
                "checked": validity.checked,
                "enforced": validity.enforced,
                "score": _finite_or_none(validity.score),
                "threshold": validity.threshold,
                "accepted": validity.accepted,
            }
        return {**super().to_body(), "in_distribution": described}


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


RETRY_AFTER_S = "1"
"""``Retry-After`` of a 429 or 503: a prediction takes tens of milliseconds, so a second is plenty."""


class OverloadedError(ServiceError):
    """HTTP 429 ``overloaded``: every prediction slot stayed busy for the whole queue timeout (answered with
    ``Retry-After``)."""

    error_type = ErrorType.OVERLOADED


class InternalServiceError(ServiceError):
    """HTTP 500 ``internal_error``: an unexpected failure; the details are logged, never sent."""

    error_type = ErrorType.INTERNAL_ERROR


class NotReadyError(ServiceError):
    """HTTP 503 ``not_ready``: the models are still loading or warming up (answered with ``Retry-After``)."""

    error_type = ErrorType.NOT_READY

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": RETRY_AFTER_S})


_HTTP_ERROR_TYPES: Mapping[int, ErrorType] = {
    400: ErrorType.BAD_REQUEST,
    401: ErrorType.UNAUTHORIZED,
    404: ErrorType.NOT_FOUND,
    405: ErrorType.METHOD_NOT_ALLOWED,
    408: ErrorType.REQUEST_TIMEOUT,
    413: ErrorType.UPLOAD_TOO_LARGE,
    415: ErrorType.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorType.OVERLOADED,
    503: ErrorType.NOT_READY,
}
_LOCATIONS: Mapping[str, str] = {
    "query": "query parameter",
    "path": "path parameter",
    "header": "header",
    "body": "form field",
}


CLIENT_TEXT_LIMIT = 64
"""Longest piece of a client's own text (a model name, a path, a query value) quoted back in an error."""


def client_text(value: object, limit: int = CLIENT_TEXT_LIMIT) -> str:
    """``value`` as a short, printable quotation for an error sentence: control and non-ASCII characters
    escaped, cut to ``limit`` characters with an ellipsis; never the whole of a long client string."""
    text = str(value)
    cut = len(text) > limit
    shown = "".join(char if " " <= char <= "~" else f"\\u{ord(char):04x}" for char in text[:limit])
    return f"'{shown}'" + ("... (cut)" if cut else "")


def error_type_of(error: Exception, default: ErrorType = ErrorType.INTERNAL_ERROR) -> ErrorType:
    """The error type of a service refusal or a decoder refusal; ``default`` for anything else."""
    if isinstance(error, ServiceError):
        return error.error_type
    if isinstance(error, ImageError):
        return image_error_type(error)
    return default


def from_image_error(error: ImageError, message: str | None = None) -> ServiceError:
    """The service's answer to a decoder refusal (``message`` replaces its sentence, e.g. to name a batch
    element)."""
    error_type = image_error_type(error)
    text = error.message if message is None else message
    if error_type is ErrorType.NOT_BRAIN_MRI:
        return NotBrainMriError(text)
    return ServiceError(text, error_type=error_type)


def as_service_error(exc: Exception, request: Request) -> ServiceError:
    """The :class:`ServiceError` that answers ``exc``; anything unexpected becomes a generic 500."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, ImageError):
        return from_image_error(exc)
    if isinstance(exc, RequestValidationError):
        return _from_validation_error(exc, request)
    if isinstance(exc, StarletteHTTPException):
        # FastAPI wraps an error raised while it reads the body (our upload limit) into a 400
        if isinstance(exc.__cause__, ServiceError):
            return exc.__cause__
        return _from_http_exception(exc, request)
    context = request_context_of(request)
    return InternalServiceError(
        f"The service failed unexpectedly while handling this request; the failure was logged "
        f"with request id {context.request_id}."
    )


def _from_http_exception(exc: StarletteHTTPException, request: Request) -> ServiceError:
    status = exc.status_code
    path = client_text(request.url.path)  # the client's own text, echoed short
    if status == 404:
        message = f"There is no route {path}; see /docs for the routes of this service."
    elif status == 405:
        message = f"The route {path} does not answer {client_text(request.method, 16)}; see /docs."
    else:
        detail = str(exc.detail).rstrip(".")
        message = f"{detail}." if detail else "The request was refused."
    return ServiceError(message, status, _HTTP_ERROR_TYPES.get(status, ErrorType.HTTP_ERROR), exc.headers)


def _from_validation_error(exc: RequestValidationError, request: Request) -> ServiceError:
    problems = list(exc.errors())
    content_type = request.headers.get("content-type", "")
    if (
        any(tuple(problem.get("loc", ())) == ("body", "file") for problem in problems)
        and content_type
        and not content_type.lower().startswith("multipart/form-data")
    ):
        return UnsupportedMediaTypeError(
            f"The request body is {content_type.split(';')[0]}; send the image as multipart/form-data "
            "in a field named 'file'."
        )
    return InvalidRequestError(" ".join(_describe_problem(problem) for problem in problems[:3]))


def _describe_problem(problem: Mapping[str, Any]) -> str:
    loc = [str(part) for part in problem.get("loc", ())]
    where = _LOCATIONS.get(loc[0], "field") if loc else "field"
    name = ".".join(loc[1:]) or "body"
    kind = problem.get("type", "")
    if (where, name) == ("form field", "file"):
        if kind == "missing":
            return (
                "The multipart field 'file' is missing: send the image as multipart/form-data "
                "in a field named 'file'."
            )
        return "The multipart field 'file' must be a file (a part with a filename), not a text value."
    if kind == "missing":
        return f"The {where} '{name}' is required."
    message = str(problem.get("msg", "is invalid")).removeprefix("Value error, ").rstrip(".")
    value = problem.get("input")
    # a query value is short and the client's own; a form field may hold anything, so it is never echoed
    shown = f" (got {client_text(value)})" if where != "form field" and isinstance(value, str) else ""
    return f"The {where} '{name}' is invalid: {message}{shown}."


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler: count the error, note it for the access log, answer the JSON body."""
    error = as_service_error(exc, request)
    context = request_context_of(request)
    if error.status_code >= 500 and not isinstance(exc, ServiceError):
        logger.error(
            "unhandled %s on %s",
            type(exc).__name__,
            request.url.path,
            exc_info=exc,
            extra={"request_id": context.request_id},
        )
    context.error_type = error.error_type
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.request_errors.labels(error_type=error.error_type).inc()
    headers = {**error.headers, REQUEST_ID_HEADER: context.request_id}
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception family to :func:`handle_error` (``Exception`` last: the 500 catch-all)."""
    for family in (ServiceError, ImageError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(family, handle_error)
