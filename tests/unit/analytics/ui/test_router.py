"""The UI router: static files with their content types and caching, no way out of the static
folder, and /api/v1/session telling the UI who the token belongs to."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from analytics.main import create_app
from analytics.ui.router import STATIC_DIR, router
from tests.unit.analytics.controlplane.helpers import (
    OPERATOR,
    PAYMENTS,
    VIEWER,
    make_settings,
    never,
)


@pytest.fixture
async def static() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ui") as client:
        yield client


async def test_root_and_ui_redirect_to_the_index(static: httpx.AsyncClient) -> None:
    for path in ("/", "/ui"):
        resp = await static.get(path)
        assert resp.status_code == 307 and resp.headers["location"] == "/ui/"


async def test_index_is_html_revalidated_every_time_with_a_strict_csp(
    static: httpx.AsyncClient,
) -> None:
    resp = await static.get("/ui/")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert resp.headers["cache-control"] == "no-cache"
    assert "script-src 'self';" in resp.headers["content-security-policy"]
    assert resp.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="/ui/app.js">' in resp.text


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/views/map.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/vendor/cytoscape.min.js", "text/javascript; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ],
)
async def test_assets_have_their_content_type_and_a_short_cache(
    static: httpx.AsyncClient, path: str, content_type: str
) -> None:
    resp = await static.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == content_type
    assert resp.headers["cache-control"] == "public, max-age=300"
    assert resp.headers["x-content-type-options"] == "nosniff"


async def test_etag_revalidation_answers_304_without_a_body(static: httpx.AsyncClient) -> None:
    first = await static.get("/ui/app.js")
    again = await static.get("/ui/app.js", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    changed = await static.get("/ui/app.js", headers={"if-none-match": '"stale"'})
    assert changed.status_code == 200 and changed.content == first.content


@pytest.mark.parametrize(
    "path",
    [
        "/ui/missing.js",
        "/ui/..%2Frouter.py",
        "/ui/views/../../router.py",
        "/ui/%2e%2e/%2e%2e/settings.py",
        "/ui/vendor",
        "/ui/.hidden",
    ],
)
async def test_nothing_outside_the_static_folder_is_served(
    static: httpx.AsyncClient, path: str
) -> None:
    resp = await static.get(path)
    assert resp.status_code in (404, 422), resp.text
    assert "__future__" not in resp.text


def test_the_vendored_graph_library_ships_with_its_licence() -> None:
    licence = (STATIC_DIR / "vendor" / "cytoscape.LICENSE").read_text()
    assert "Permission is hereby granted, free of charge" in licence  # MIT
    head = (STATIC_DIR / "vendor" / "cytoscape.min.js").read_text()[:400]
    assert "Cytoscape Consortium" in head


def test_every_module_the_ui_imports_exists() -> None:
    for source in STATIC_DIR.rglob("*.js"):
        if "vendor" in source.parts:
            continue
        for spec in re.findall(r'from "(\.[^"]+)"', source.read_text()):
            assert (source.parent / spec).resolve().is_file(), f"{source.name} imports {spec}"


def test_the_ui_keeps_the_token_in_session_storage_and_never_parses_markup() -> None:
    scripts = "\n".join(p.read_text() for p in STATIC_DIR.rglob("*.js") if "vendor" not in p.parts)
    assert "localStorage" not in scripts
    assert "innerHTML" not in scripts and "insertAdjacentHTML" not in scripts
    api = (STATIC_DIR / "api.js").read_text()
    assert "sessionStorage" in api and "authorization = `Bearer ${current}`" in api


async def test_session_names_the_role_of_the_token(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path), sleep=never)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
            viewer = await client.get("/api/v1/session", headers=VIEWER)
            operator = await client.get("/api/v1/session", headers=OPERATOR)
            anonymous = await client.get("/api/v1/session")
            workload = await client.get("/api/v1/session", headers=PAYMENTS)
            index = await client.get("/ui/")
    assert viewer.status_code == 200 and viewer.json()["role"] == "viewer"
    assert operator.status_code == 200 and operator.json()["role"] == "operator"
    assert anonymous.status_code == 401
    assert workload.status_code == 403  # a sidecar's bootstrap token is not a UI login
    assert index.status_code == 200  # the app serves the UI itself, without a token
