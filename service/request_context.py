"""What the service knows about one request while it runs: its id and what the access log line reports."""

from __future__ import annotations

import re
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import HTTPConnection

REQUEST_ID_HEADER: Final = "X-Request-ID"
_SANE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_STATE_KEY: Final = "request_context"


@dataclass
class RequestContext:
    """The request id, and the model, label and error type that the access log line reports."""

    request_id: str
    model: str | None = None
    label: str | None = None
    error_type: str | None = None


def choose_request_id(incoming: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is sane (1-128 of ``A-Za-z0-9._:-``), else a new uuid4 hex."""
    if incoming is not None and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def attach_request_context(scope: MutableMapping[str, Any], context: RequestContext) -> None:
    """Store ``context`` in the request's state (``request.state.request_context``)."""
    scope.setdefault("state", {})[_STATE_KEY] = context


def request_context_of(connection: HTTPConnection) -> RequestContext:
    """The context the observation middleware attached; a fresh one where none was (e.g. a bare ASGI test)."""
    state = connection.scope.setdefault("state", {})
    context = state.get(_STATE_KEY)
    if not isinstance(context, RequestContext):
        context = RequestContext(request_id=choose_request_id(None))
        state[_STATE_KEY] = context
    return context
