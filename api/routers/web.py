"""The web page at `/`: plain HTML, JavaScript and CSS from api/web/ (no build step, no CDN).

The page only uses the public API (POST /v1/process, the SSE stream, GET /v1/status, /v1/templates)
with the key the user enters; it is kept in the tab's sessionStorage. A strict Content-Security-Policy
allows nothing but this origin, so a transcript or summary can never run as script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from maie.api.errors import ApiError

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/web/{name}")
async def asset(name: str = PathParam(max_length=64)) -> FileResponse:
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"no web asset '{name}'")
    return FileResponse(WEB_DIR / name, media_type=ASSETS[name], headers=HEADERS)
