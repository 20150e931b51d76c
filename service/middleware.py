"""Small ASGI middlewares: request observation (id, in-flight, duration, access log), API keys before the
upload is read, the upload limit and the body deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import SecretStr
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import API_KEY_HEADER, check_api_key
from service.errors import ErrorType, RequestTimeoutError, UploadTooLargeError
from service.logging import log_request
from service.metrics import ServiceMetrics
from service.request_context import (
    REQUEST_ID_HEADER,
    RequestContext,
    attach_request_context,
    choose_request_id,
)

UNMATCHED_ROUTE = "unmatched"
MULTIPART_FRAMING_BYTES = 64 * 1024
"""Room for the multipart boundaries and part headers around a file of the largest accepted size."""


class RequestObservationMiddleware:
    """Give each request an id (echoed as X-Request-ID), count it in flight, time it and log one line."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        context = RequestContext(request_id=choose_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER)))
        attach_request_context(scope, context)
        status = 500  # what the client sees when the app raises before answering

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers.append(REQUEST_ID_HEADER, context.request_id)
            await send(message)

        self.metrics.inflight_requests.inc()
        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception:
            status = 500
            context.error_type = context.error_type or ErrorType.INTERNAL_ERROR
            raise
        finally:
            self.metrics.inflight_requests.dec()
            seconds = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.request_duration.labels(route=route, status=str(status)).observe(seconds)
            log_request(
                context, method=scope["method"], route=route, status=status, latency_ms=seconds * 1000.0
            )


def _route_template(scope: Scope) -> str:
    """The matched route's path template (``/models/{name}``), so that labels do not grow with the URLs."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class UploadLimitMiddleware:
    """Refuse a request body over ``max_upload_bytes`` (plus multipart framing) with 413 without reading it.

    A declared Content-Length over the limit is refused before the first byte is read; a body without one
    (chunked) is counted as it streams and cut off as soon as it passes the limit. The error is raised from
    ``receive``, i.e. inside the body parsing of the route, and answered by the one error handler.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_upload_bytes: int,
        framing_bytes: int = MULTIPART_FRAMING_BYTES,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.framing_bytes = framing_bytes
        self.path_limits = dict(path_limits or {})  # routes that take more than one image (a series)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.max_upload_bytes)
        max_bytes = limit + self.framing_bytes
        declared = _content_length(scope)
        received = 0

        async def receive_with_limit() -> Message:
            nonlocal received
            if declared is not None and declared > max_bytes:
                raise self._too_large(declared, limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise self._too_large(None, limit)
            return message

        await self.app(scope, receive_with_limit, send)

    def _too_large(self, declared: int | None, limit: int) -> UploadTooLargeError:
        size = f" ({declared:,} bytes)" if declared is not None else ""
        return UploadTooLargeError(
            f"The upload{size} is larger than the limit of {limit:,} bytes; send a smaller image."
        )


class BodyDeadlineMiddleware:
    """Refuse with 408 ``request_timeout`` a request whose body has not fully arrived ``body_timeout_s``
    after the app first asked for it (a slow or stalled upload holds a connection, a parser and its buffer).

    Like the upload limit, the error is raised from ``receive`` and answered by the one error handler; its
    ``Connection: close`` makes the server drop the half-sent request.
    """

    def __init__(self, app: ASGIApp, body_timeout_s: float) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        complete = False

        async def receive_before_deadline() -> Message:
            nonlocal deadline, complete
            if complete:  # after the body only a disconnect can come: no deadline for waiting on it
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.body_timeout_s
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise RequestTimeoutError(
                    f"The request body did not arrive within {self.body_timeout_s:g} s; "
                    "send it faster or send a smaller image."
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, receive_before_deadline, send)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class ApiKeyBeforeUploadMiddleware:
    """Refuse a request to an upload route without a valid API key before a byte of its body is read.

    The routes check the key too (a dependency, which FastAPI runs only after it has parsed the body); this
    check runs at the first ``receive``, so an unauthenticated client cannot make the service read (up to
    ``MRI_MAX_UPLOAD_BYTES`` of) an upload. Like the upload limit, the error is raised from ``receive`` and
    answered by the one error handler.
    """

    def __init__(
        self, app: ASGIApp, api_keys: Sequence[SecretStr], paths: Sequence[str] = ("/predict",)
    ) -> None:
        self.app = app
        self.api_keys = list(api_keys)
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.api_keys or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get(API_KEY_HEADER)
        checked = False

        async def receive_after_key_check() -> Message:
            nonlocal checked
            if not checked:
                check_api_key(self.api_keys, offered)
                checked = True
            return await receive()

        await self.app(scope, receive_after_key_check, send)
