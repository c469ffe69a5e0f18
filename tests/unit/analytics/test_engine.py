"""The analysis engine over a real embedded store: incidents found, ranked, stored, served."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from analytics.anomalies.repository import IncidentRepository
from analytics.callgraph import TimeWindow
from analytics.engine import (
    AnalysisEngine,
    analyze,
    fine_edge_series,
    fine_instance_series,
    fine_unreachable,
)
from analytics.main import create_app
from collector.store import Store
from tests.conftest import Span, trace_columns
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


async def test_the_fine_path_alerts_within_half_a_minute_and_the_incident_keeps_its_id(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="analytics.engine")
    # Two traces a second; db slow from minute 62 on (minute 62 starts at second 0 of it).
    await store.insert("otel_traces", trace_columns(mesh_spans(65, slow_from=62, per_minute=120)))
    clock = [minute(62).timestamp() + 13.0]  # buckets 62:00 and 62:05 complete, 3 s settled
    engine = AnalysisEngine(store, wall_clock=lambda: clock[0])
    await engine._repo.ensure_table()

    early = await engine.run_once()

    assert len(early) == 1
    first = early[0].incident
    assert first.start == minute(62)
    # Every request is slower: the median fires after two buckets (the p99 alone would need
    # four, FINE_DETECTOR.tail_min_run_points).
    assert {a.signal for a in first.anomalies} == {"latency_p50"}
    assert {"api->db", "db"} <= {a.subject for a in first.anomalies}
    assert early[0].candidates[0].service == "db"
    # Later, the minute path sees minutes 62-63 too: the same incident, under the same id.
    clock[0] = minute(64).timestamp() + 3.0
    later = await engine.run_once()
    assert [f.incident.id for f in later] == [first.id]
    assert any(a.end - a.start == timedelta(minutes=1) for a in later[0].incident.anomalies)
    stored = await IncidentRepository(store).list(minute(0), minute(80))
    assert [r["id"] for r in stored] == [first.id]
    # Each anomaly and the incident are logged once, when first seen (the alert's time).
    opened = [r for r in caplog.records if r.getMessage() == "incident opened"]
    assert [getattr(r, "incident", None) for r in opened] == [first.id]
    found = [
        (getattr(r, "subject", ""), getattr(r, "signal", ""), getattr(r, "start", ""))
        for r in caplog.records
        if r.getMessage() == "anomaly found"
    ]
    assert len(found) == len(set(found)) and ("db", "latency_p50", first.start.isoformat()) in found


async def test_without_the_fine_path_a_minute_bucket_alerts_only_after_two_minutes(
    store: Store,
) -> None:
    await store.insert("otel_traces", trace_columns(mesh_spans(65, slow_from=62, per_minute=120)))
    clock = [minute(62).timestamp() + 23.0]
    engine = AnalysisEngine(store, fine=None, wall_clock=lambda: clock[0])
    await engine._repo.ensure_table()
    assert await engine.run_once() == []
    clock[0] = minute(64).timestamp() + 3.0
    engine = AnalysisEngine(store, fine=None, wall_clock=lambda: clock[0])
    assert len(await engine.run_once()) == 1


async def test_fine_edge_series_buckets_sidecar_client_spans(store: Store) -> None:
    await store.insert("otel_traces", trace_columns(mesh_spans(2, slow_from=1, per_minute=120)))
    points = await fine_edge_series(store, TimeWindow(minute(0), minute(2)), 10)
    assert {(p.caller, p.callee) for p in points} == {("web", "api"), ("api", "db")}
    assert len(points) == 2 * 12 and {p.stats.requests for p in points} == {20}
    assert {p.minute.second for p in points} == {0, 10, 20, 30, 40, 50}
    slow = [p for p in points if p.callee == "db" and p.minute >= minute(1)]
    assert all(p.stats.p50_ms and p.stats.p50_ms > 100 for p in slow)
    with pytest.raises(ValueError, match="step_s"):
        await fine_edge_series(store, TimeWindow(minute(0), minute(2)), 0)


def _renamed(spans: list[Span], suffix: str) -> list[Span]:
    """The same traces as another, unconnected mesh: services and ids renamed."""

    def name(service: str) -> str:
        return service + suffix if service else service

    return [
        s._replace(
            service=name(s.service),
            trace_id=suffix + s.trace_id[len(suffix) :],
            attributes={
                k: name(v) if k == "meshlens.upstream" else v for k, v in s.attributes.items()
            },
        )
        for s in spans
    ]


async def test_unconnected_services_failing_together_are_separate_incidents(store: Store) -> None:
    shop = mesh_spans(70, slow_from=62)
    batch = _renamed(mesh_spans(70, slow_from=63, failing=True), "b")
    await store.insert("otel_traces", trace_columns([*shop, *batch]))

    found = await analyze(store, TimeWindow(minute(55), minute(70)))

    by_start = sorted(found, key=lambda f: f.incident.start)
    assert [f.incident.start for f in by_start] == [minute(62), minute(63)]
    assert set(by_start[0].incident.services) <= {"web", "api", "db"}
    assert set(by_start[1].incident.services) <= {"webb", "apib", "dbb"}
    assert [f.candidates[0].service for f in by_start] == ["db", "dbb"]


def _replica_spans(seconds: int, crash_at_s: int) -> list[Span]:
    """Sidecar server spans of two `cat` replicas, 4 requests a second between them; cat-1
    stops answering at `crash_at_s` and cat-2 takes all of them."""
    base_ns = int(minute(0).timestamp()) * 1_000_000_000
    spans = []
    for q in range(seconds * 4):
        at_s = q / 4
        instance = "cat-2" if at_s >= crash_at_s or q % 2 else "cat-1"
        spans.append(
            Span(
                "cat",
                "GET /item",
                f"{q + 1:032x}",
                f"{q + 1:016x}",
                base_ns + q * 250_000_000,
                3_000_000,
                attributes={"meshlens.route": "item", "http.response.status_code": "200"},
                resource={"service.name": "cat", "service.instance.id": instance},
            )
        )
    return spans


async def test_the_fine_path_reports_a_replica_that_stopped_while_its_sibling_serves(
    store: Store,
) -> None:
    await store.insert("otel_traces", trace_columns(_replica_spans(180, crash_at_s=60)))
    series = await fine_instance_series(store, TimeWindow(minute(0), minute(3)), 5)
    assert sorted(series) == ["cat"] and sorted(series["cat"]) == ["cat-1", "cat-2"]
    assert [p.requests for p in series["cat"]["cat-1"]] == [10] * 12
    assert {p.requests for p in series["cat"]["cat-2"][12:]} == {20}

    engine = AnalysisEngine(store, wall_clock=lambda: minute(2).timestamp() + 3.0)
    await engine._repo.ensure_table()
    found = await engine.run_once()

    assert len(found) == 1
    (stopped,) = found[0].incident.anomalies
    assert (stopped.subject, stopped.signal, stopped.instance) == (
        "cat",
        "instance_stopped",
        "cat-1",
    )
    assert stopped.start == minute(1) and found[0].incident.services == ("cat",)
    assert found[0].record()["anomalies"][0]["instance"] == "cat-1"


def _refused_spans(at_s: float, count: int) -> list[Span]:
    """cat-1's sidecar answering 502 because its app refused the connection (it crashed)."""
    base_ns = int(minute(0).timestamp()) * 1_000_000_000 + int(at_s * 1e9)
    return [
        Span(
            "cat",
            "GET /item",
            f"{0xF000 + i:032x}",
            f"{0xF000 + i:016x}",
            base_ns + i * 1_000_000,
            1_000_000,
            status="Error",
            attributes={
                "meshlens.route": "item",
                "http.response.status_code": "502",
                "meshlens.error.reason": "connect_failure",
            },
            resource={"service.name": "cat", "service.instance.id": "cat-1"},
        )
        for i in range(count)
    ]


async def test_a_replica_its_sidecar_reports_unreachable_is_stopped_after_two_buckets(
    store: Store,
) -> None:
    await store.insert("otel_traces", trace_columns(_replica_spans(75, crash_at_s=60)))
    at = minute(1).timestamp() + 13.0  # the buckets 60-65 s and 65-70 s are complete

    async def stopped() -> list[str]:
        engine = AnalysisEngine(store, wall_clock=lambda: at)
        await engine._repo.ensure_table()
        found = await engine.run_once()
        return [a.instance for f in found for a in f.incident.anomalies]

    assert await stopped() == []  # two silent buckets alone: a starved replica looks the same
    await store.insert("otel_traces", trace_columns(_refused_spans(60.5, 3)))
    window = TimeWindow(minute(0), minute(2))
    assert await fine_unreachable(store, window, 5) == {"cat": {"cat-1": {minute(1)}}}
    assert await stopped() == ["cat-1"]
