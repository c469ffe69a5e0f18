"""The analysis engine over a real embedded store: incidents found, ranked, stored, served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from analytics.anomalies.repository import IncidentRepository
from analytics.callgraph import TimeWindow
from analytics.engine import AnalysisEngine, analyze
from analytics.main import create_app
from collector.store import Store
from tests.conftest import trace_columns
from tests.unit.analytics.controlplane.helpers import VIEWER, make_settings, never
from tests.unit.analytics.scenario import mesh_spans, minute


async def test_a_slow_database_is_one_incident_with_db_ranked_first(store: Store) -> None:
    await store.insert("otel_traces", trace_columns(mesh_spans(70, slow_from=62)))

    found = await analyze(store, TimeWindow(minute(55), minute(70)))

    assert len(found) == 1
    incident = found[0].incident
    assert incident.start == minute(62)
    assert {"api->db", "db"} <= {a.subject for a in incident.anomalies}
    assert found[0].candidates[0].service == "db"
    assert found[0].candidates[0].self_time_change_ms > 100


async def test_failing_database_errors_originate_in_db(store: Store) -> None:
    await store.insert("otel_traces", trace_columns(mesh_spans(70, slow_from=62, failing=True)))

    found = await analyze(store, TimeWindow(minute(55), minute(70)))

    signals = {a.signal for f in found for a in f.incident.anomalies}
    assert "error_ratio" in signals
    top = found[0].candidates[0]
    assert top.service == "db" and top.error_origins > 0


async def test_a_quiet_window_has_no_incident(store: Store) -> None:
    await store.insert("otel_traces", trace_columns(mesh_spans(70, slow_from=999)))
    assert await analyze(store, TimeWindow(minute(55), minute(70))) == []


async def test_engine_run_stores_incidents_served_by_the_api(store: Store, tmp_path: Path) -> None:
    await store.insert("otel_traces", trace_columns(mesh_spans(70, slow_from=62)))
    engine = AnalysisEngine(store, lookback_s=15 * 60, wall_clock=lambda: minute(70).timestamp())
    await engine.start()
    try:
        found = await engine.run_once()  # the loop's first run may race this one: same rows
    finally:
        await engine.shutdown()
    assert len(found) == 1
    stored = await IncidentRepository(store).list(minute(0), minute(80))
    assert [r["id"] for r in stored] == [found[0].incident.id]

    app = create_app(make_settings(tmp_path), store=store, sleep=never)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
            listed = await client.get(
                "/api/v1/incidents",
                params={"from": minute(0).isoformat(), "to": minute(80).isoformat()},
                headers=VIEWER,
            )
            one = await client.get(f"/api/v1/incidents/{found[0].incident.id}", headers=VIEWER)
            missing = await client.get("/api/v1/incidents/0000000000000000", headers=VIEWER)
            anonymous = await client.get("/api/v1/incidents")
            bad = await client.get("/api/v1/incidents", params={"from": "x"}, headers=VIEWER)
            graph = await client.get(
                "/api/v1/services/map",
                params={"from": minute(0).isoformat(), "to": minute(70).isoformat()},
                headers=VIEWER,
            )
            series = await client.get(
                "/api/v1/edges/series",
                params={
                    "caller": "api",
                    "callee": "db",
                    "from": minute(60).isoformat(),
                    "to": minute(65).isoformat(),
                },
                headers=VIEWER,
            )
    assert listed.status_code == 200
    assert [i["id"] for i in listed.json()["incidents"]] == [found[0].incident.id]
    assert one.json()["root_causes"][0]["service"] == "db"
    assert missing.status_code == 404
    assert anonymous.status_code == 401
    assert bad.status_code == 400 and "not ISO 8601" in bad.text
    body = graph.json()
    assert body["source"] == "aggregates"
    assert {(e["caller"], e["callee"]) for e in body["edges"]} == {("web", "api"), ("api", "db")}
    assert {n["service"] for n in body["nodes"]} == {"web", "api", "db"}
    points = series.json()["points"]
    assert len(points) == 5 and points[-1]["stats"]["p99_ms"] > 100


async def test_a_failing_run_is_counted_and_the_loop_keeps_its_owner(store: Store) -> None:
    await store.command("DROP TABLE meshlens_edges_1m_mv")
    await store.command("DROP TABLE meshlens_edges_1m")
    engine = AnalysisEngine(store, interval_s=3600, wall_clock=lambda: minute(70).timestamp())
    await engine.start()
    try:
        for _ in range(200):  # bounded wait for the first run (it fails on the missing table)
            if engine.failures:
                break
            await asyncio.sleep(0.02)
        assert engine.failures == 1 and engine.runs == 0
    finally:
        await engine.shutdown()
    await engine.shutdown()  # idempotent
