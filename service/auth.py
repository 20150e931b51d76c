"""API keys: the one check, used before an upload is read (middleware) and by the routes (dependency)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Final

from pydantic import SecretStr

from service.errors import UnauthorizedError

API_KEY_HEADER: Final = "X-API-Key"


def check_api_key(keys: Sequence[SecretStr], offered: str | None) -> None:
    """Raise :class:`UnauthorizedError` unless ``keys`` is empty or ``offered`` is one of them.

    Every key is compared in constant time, so the time taken does not tell which one came close.
    """
    if not keys:
        return
    candidate = (offered or "").encode()
    matches = [hmac.compare_digest(candidate, key.get_secret_value().encode()) for key in keys]
    if not any(matches):
        problem = "is missing" if offered is None else "is not a valid key"
        raise UnauthorizedError(f"The {API_KEY_HEADER} header {problem}; this service requires an API key.")
