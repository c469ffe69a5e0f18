"""Serves the web UI's static files at / and /ui, plus GET /api/v1/session (who the token is).

Files come from `analytics/ui/static` only (no directory traversal, no listing). HTML is
`no-cache` so a new release is picked up at once; scripts and styles are revalidated via ETag.
"""

from __future__ import annotations

import hashlib
import mimetypes
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from analytics.deps import ReaderDep

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).parent / "static"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
# Same-origin only; cytoscape needs inline styles on its canvas container.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SAFE = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"

router = APIRouter(tags=["ui"])


@lru_cache(maxsize=128)
def _load(path: Path, mtime_ns: int) -> tuple[bytes, str]:
    body = path.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _file_response(request: Request, relative: str) -> Response:
    path = (STATIC_DIR / relative).resolve()
    if STATIC_DIR.resolve() not in path.parents or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no UI file {relative}")
    content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    if content_type is None:
        raise HTTPException(status_code=404, detail=f"no UI file {relative}")
    body, etag = _load(path, path.stat().st_mtime_ns)
    headers = {
        "etag": etag,
        "cache-control": "no-cache" if path.suffix == ".html" else "public, max-age=300",
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
    }
    if path.suffix == ".html":
        headers["content-security-policy"] = _CSP
        headers["x-frame-options"] = "DENY"
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=content_type, headers=headers)


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui", include_in_schema=False)
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/", include_in_schema=False)
async def index(request: Request) -> Response:
    return _file_response(request, "index.html")


@router.get("/ui/{relative:path}", include_in_schema=False)
async def static_file(
    request: Request, relative: Annotated[str, PathParam(pattern=_SAFE, max_length=200)]
) -> Response:
    return _file_response(request, relative)


@router.get("/api/v1/session")
async def session(principal: ReaderDep) -> dict[str, str]:
    """The caller's name and role, so the UI can hide what a viewer may not do."""
    return {"name": principal.name, "role": principal.kind}
