"""The HTTP server: uvicorn with deadlines that a slow, silent or greedy client cannot stretch.

uvicorn alone keeps a connection for as long as its client wishes while the request line and headers trickle
in (its keep-alive timer restarts on every byte and is not armed at all before the first request), and has no
cap on open connections that answers in JSON. :class:`GuardedH11Protocol` adds, per connection:

- a **header deadline** (``MRI_HEADER_TIMEOUT_S``): from the connection's opening, or from the end of its
  previous response, the request line and headers must be complete in time, or the client gets a JSON 408
  ``request_timeout`` and the connection is closed;
- a **connection cap** (``MRI_MAX_CONNECTIONS``): a connection past it gets a JSON 503 ``overloaded`` with
  ``Retry-After`` and is closed before anything of it is read.

The body deadline (``MRI_BODY_TIMEOUT_S``) is an ASGI middleware
(:class:`service.middleware.BodyDeadlineMiddleware`), so that its 408 is the service's ordinary JSON
error; the idle keep-alive after a response is uvicorn's own ``timeout_keep_alive`` (``MRI_KEEP_ALIVE_S``).
The protocol subclasses uvicorn's h11 implementation, which is why uvicorn and h11 are pinned in
``pyproject.toml``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings

__all__ = ["GuardedH11Protocol", "guarded_protocol", "raw_json_response", "serve"]

logger = logging.getLogger("service.server")


def raw_json_response(status: int, reason: str, body: dict[str, str], headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 response with a JSON body and ``Connection: close``, as bytes on the wire."""
    payload = json.dumps(body).encode("utf-8")
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
        "connection: close",
        *[f"{name}: {value}" for name, value in headers.items()],
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection cap (see the module docstring).

    The two limits are class attributes: :func:`guarded_protocol` makes a subclass that carries them.
    """

    header_timeout_s: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 256

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            retry = 1
            transport.write(
                raw_json_response(
                    503,
                    "Service Unavailable",
                    {
                        "error": f"The server holds its limit of {self.max_connections} open connections; "
                        f"retry in {retry} s or reuse a connection.",
                        "error_type": "overloaded",
                    },
                    {"retry-after": str(retry)},
                )
            )
            transport.close()
            logger.warning(
                "refused a connection over the limit of %d", self.max_connections, extra={"status": 503}
            )
            return
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_deadline()  # the next request's headers have the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being written (pipelining): its end re-arms the deadline
        started = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        if started:  # part of a request arrived: tell the client why it is cut off
            self.transport.write(
                raw_json_response(
                    408,
                    "Request Timeout",
                    {
                        "error": f"The request line and headers did not arrive within "
                        f"{self.header_timeout_s:g} s; the connection is closed.",
                        "error_type": "request_timeout",
                    },
                    {},
                )
            )
        self.transport.close()
        logger.info(
            "closed a connection whose request headers did not arrive within %g s",
            self.header_timeout_s,
            extra={"status": 408 if started else None, "error_type": "request_timeout"},
        )


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with these limits (uvicorn instantiates it per connection)."""
    return type(
        "ConfiguredGuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "max_connections": max_connections},
    )


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of ``python -m service``: the guarded protocol and the settings' limits."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.header_timeout_s, settings.max_connections),
        log_config=None,  # keep the JSON logging configured by the caller
        access_log=False,  # the service writes its own access line per request
        timeout_keep_alive=max(1, math.ceil(settings.keep_alive_s)),
        timeout_graceful_shutdown=10,
    )


def serve(app: Any, settings: Settings) -> None:
    """Run ``app`` with :func:`uvicorn_config` until SIGTERM or SIGINT."""
    uvicorn.Server(uvicorn_config(app, settings)).run()
