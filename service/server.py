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

On SIGTERM, :class:`GracefulServer` stops in three steps, so that a balancer or an orchestrator that moves
traffic away from a stopping replica loses no request:

1. at once, ``/health/ready`` answers 503 (``app.state.draining``), and every response carries
   ``Connection: close`` so that clients and balancers open their next connection elsewhere;
2. for ``MRI_SHUTDOWN_DRAIN_S`` more seconds the server still accepts connections and serves them (the time a
   balancer needs to see readiness fail, or Kubernetes to take the pod out of its endpoints);
3. then uvicorn stops listening, closes idle connections, lets the requests in flight finish within
   ``MRI_SHUTDOWN_GRACE_S`` (cancelling what is left after it), runs the lifespan's shutdown, and the process
   exits 0.

SIGINT (Ctrl+C) skips the drain; a second SIGTERM ends it early.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings

__all__ = [
    "CloseWhileDraining",
    "GracefulServer",
    "GuardedH11Protocol",
    "guarded_protocol",
    "raw_json_response",
    "serve",
]

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


def shutdown_grace_s(settings: Settings) -> float:
    """``MRI_SHUTDOWN_GRACE_S``: how long the requests in flight may take to finish after SIGTERM."""
    return settings.shutdown_grace_s


def shutdown_drain_s(settings: Settings) -> float:
    """``MRI_SHUTDOWN_DRAIN_S``: how long the server keeps listening, not ready, after SIGTERM."""
    return settings.shutdown_drain_s


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
        timeout_graceful_shutdown=max(1, math.ceil(shutdown_grace_s(settings))),
    )


class CloseWhileDraining:
    """ASGI wrapper: once ``draining()`` is true, every response says ``Connection: close`` (and h11 closes
    the connection after it), so that keep-alive clients and balancers reconnect, to another replica."""

    def __init__(self, app: Any, draining: Callable[[], bool]) -> None:
        self.app = app
        self.draining = draining

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.draining():
            await self.app(scope, receive, send)
            return

        async def send_with_close(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_with_close)


class GracefulServer(uvicorn.Server):
    """uvicorn's server with a drain on SIGTERM (see the module docstring) and exit status 0 after it.

    ``on_drain`` is called from the signal handler: it must only set a flag (``app.state.draining``).
    """

    def __init__(self, config: uvicorn.Config, *, drain_s: float, on_drain: Callable[[], None]) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self.on_drain = on_drain
        self.drain_until: float | None = None
        self._signal: int | None = None  # the first stop signal, logged by on_tick (not in the handler)
        self._logged = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_drain()  # readiness is 503 from now on, whatever comes next
        if self._signal is None:
            self._signal = sig
        if sig == signal.SIGTERM and self.drain_until is None and self.drain_s > 0 and not self.should_exit:
            self.drain_until = time.monotonic() + self.drain_s  # keep serving; on_tick stops the server
            return
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn raises a caught signal again once it has shut down, so that the process ends as killed
            # by it (status 143); a graceful stop on SIGTERM is the normal end of a replica: exit 0
            self._captured_signals = [caught for caught in self._captured_signals if caught != sig]

    async def on_tick(self, counter: int) -> bool:
        if self._signal is not None and not self._logged:
            self._logged = True
            name = signal.Signals(self._signal).name
            if self.drain_until is not None:
                logger.info(
                    "%s: not ready; draining for %g s, then no new connections and %g s for the requests in "
                    "flight",
                    name,
                    self.drain_s,
                    self.config.timeout_graceful_shutdown,
                )
            else:
                logger.info(
                    "%s: not ready; no new connections, %g s for the requests in flight",
                    name,
                    self.config.timeout_graceful_shutdown,
                )
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


def serve(app: Any, settings: Settings) -> None:
    """Run ``app`` with :func:`uvicorn_config` until SIGTERM (drained, exit 0) or SIGINT."""
    app.state.draining = False

    def draining() -> bool:
        return bool(app.state.draining)

    def on_drain() -> None:
        app.state.draining = True

    config = uvicorn_config(CloseWhileDraining(app, draining), settings)
    GracefulServer(config, drain_s=shutdown_drain_s(settings), on_drain=on_drain).run()
