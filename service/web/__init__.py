"""The clinician's page: ``/`` (upload a slice, see the answer and the heat map) and ``/ui/models/{name}``
(the model card), plain HTML, CSS and JavaScript served from this package (no CDN, no build step).

The pages hold no state on the server: they call the public API (``/models``, ``/predict`` and the model's
documents) from the browser, with the API key (when the service needs one) kept in the tab's session storage.
A strict Content-Security-Policy keeps every script, style and image on this origin (images also from
``data:`` and ``blob:`` URLs, which the heat map and the figures use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR: Final = Path(__file__).parent / "static"
STATIC_URL: Final = "/ui/static"
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def upload_page() -> FileResponse:
    """The upload page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/ui/models/{name}")
async def model_card_page(name: str) -> FileResponse:
    """The model card of ``name`` (the page reads the name from its URL and asks the API)."""
    return FileResponse(STATIC_DIR / "card.html", media_type="text/html", headers=PAGE_HEADERS)


def static_files() -> StaticFiles:
    """The pages' scripts and style sheet, mounted at :data:`STATIC_URL`."""
    return StaticFiles(directory=STATIC_DIR)
