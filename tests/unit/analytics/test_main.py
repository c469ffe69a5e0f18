from __future__ import annotations

from pathlib import Path

import httpx

from analytics.main import create_app
from collector.store import open_store
from tests.unit.analytics.controlplane.helpers import OPERATOR, VIEWER, make_settings, never


async def test_app_serves_the_control_plane_and_closes_its_own_store(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, sleep=never)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
            bundle = await client.get("/api/v1/controlplane/trust-bundle", headers=VIEWER)
            openapi = await client.get("/openapi.json")
    assert bundle.status_code == 200
    assert bundle.json()["trust_domain"] == "mesh.test"
    assert "/api/v1/controlplane/watch" in openapi.json()["paths"]
    assert (tmp_path / "data" / "ca" / "active").exists()
    # The embedded engine allows one directory per process: reopening another one only works
    # because the app closed the store it opened.
    other = open_store(f"chdb://{tmp_path}/other")
    try:
        assert await other.ping()
    finally:
        await other.close()


async def test_a_given_store_is_used_and_left_open(tmp_path: Path) -> None:
    store = open_store(f"chdb://{tmp_path}/ch")
    try:
        app = create_app(make_settings(tmp_path), store=store, sleep=never)
        async with app.router.lifespan_context(app):
            pass
        tables = await store.query("SELECT name FROM system.tables WHERE name LIKE 'meshlens_cp_%'")
        assert sorted(r["name"] for r in tables) == [
            "meshlens_cp_acks",
            "meshlens_cp_audit",
            "meshlens_cp_instances",
            "meshlens_cp_policies",
        ]
    finally:
        await store.close()


async def test_a_body_that_json_cannot_echo_gets_a_422_not_a_500(tmp_path: Path) -> None:
    # FastAPI's default 422 echoes the bad input: a lone surrogate or 1e400 (infinity) could not
    # be encoded, and a client's bad request was answered 500 with a traceback logged.
    app = create_app(make_settings(tmp_path), sleep=never)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
            answers = [
                await client.post(
                    "/api/v1/controlplane/instances",
                    content=body,
                    headers={**OPERATOR, "content-type": "application/json"},
                )
                for body in (b'"\\ud800"', b'{"service": 1e400}', b'{"service": 5}')
            ]
    assert [a.status_code for a in answers] == [422, 422, 422]
    surrogate, infinite, _ = (a.json()["detail"][0] for a in answers)
    assert surrogate["input"] == "'\\ud800'" and surrogate["loc"] == ["body"]
    assert (infinite["loc"], infinite["input"]) == (["body", "service"], "inf")
