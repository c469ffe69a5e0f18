"""Service map from per-minute aggregates (sidecar CLIENT spans) and from raw parent/child spans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics.callgraph import TimeWindow, edge_series, parse_time, service_map
from collector.store import Store
from tests.conftest import Span, trace_columns

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
NS = int(T0.timestamp()) * 1_000_000_000
WINDOW = TimeWindow(T0, T0 + timedelta(minutes=10))


def _client(
    caller: str,
    callee: str,
    i: int,
    *,
    route: str = "r",
    status: int = 200,
    ms: int = 10,
    minute: int = 0,
) -> Span:
    return Span(
        service=caller,
        name="GET",
        kind="Client",
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        start_ns=NS + minute * 60_000_000_000 + i,
        duration_ns=ms * 1_000_000,
        attributes={
            "meshlens.upstream": callee,
            "meshlens.route": route,
            "http.response.status_code": str(status),
        },
    )


async def test_fan_out_map_has_each_edge_with_red_and_routes(store: Store) -> None:
    spans = [_client("web", "users", i, ms=10) for i in range(10)]
    spans += [_client("web", "orders", 100 + i, route="list", ms=20) for i in range(4)]
    spans += [_client("web", "orders", 200 + i, route="put", status=503) for i in range(2)]
    await store.insert("otel_traces", trace_columns(spans))

    graph = await service_map(store, WINDOW)

    assert graph.source == "aggregates"
    edges = {(e.caller, e.callee): e for e in graph.edges}
    assert set(edges) == {("web", "users"), ("web", "orders")}
    orders = edges[("web", "orders")]
    assert orders.stats.requests == 6 and orders.stats.errors == 2
    assert orders.stats.error_ratio == pytest.approx(2 / 6)
    assert [r for r, _ in orders.routes] == ["list", "put"]
    assert [s.requests for _, s in orders.routes] == [4, 2]
    assert orders.routes[0][1].p50_ms is None  # route percentiles are opt-in
    detailed = await service_map(store, WINDOW, route_percentiles=True)
    routes = dict(next(e for e in detailed.edges if e.callee == "orders").routes)
    assert routes["list"].p50_ms == pytest.approx(20.0)
    assert edges[("web", "users")].stats.p50_ms == pytest.approx(10.0)
    assert edges[("web", "users")].stats.rate_per_s == pytest.approx(10 / 600)
    nodes = {n.service: n.virtual for n in graph.nodes}
    # users and orders never sent a span: they are virtual nodes, the edge still exists.
    assert nodes == {"web": False, "users": True, "orders": True}


async def test_raw_spans_give_edges_when_no_sidecar_aggregates(store: Store) -> None:
    spans = []
    for i in range(5):
        trace = f"{i + 1:032x}"
        spans += [
            Span("front", "GET /", trace, f"{i:08x}aaaaaaaa", NS + i, 30_000_000, kind="Server"),
            Span(
                "front",
                "HTTP GET",
                trace,
                f"{i:08x}bbbbbbbb",
                NS + i + 1,
                20_000_000,
                kind="Client",
                parent_span_id=f"{i:08x}aaaaaaaa",
            ),
            Span(
                "db",
                "query",
                trace,
                f"{i:08x}cccccccc",
                NS + i + 2,
                15_000_000,
                parent_span_id=f"{i:08x}bbbbbbbb",
                status="Error" if i == 0 else "Unset",
            ),
        ]
    await store.insert("otel_traces", trace_columns(spans))

    graph = await service_map(store, WINDOW)

    assert graph.source == "spans"
    assert [(e.caller, e.callee) for e in graph.edges] == [("front", "db")]
    edge = graph.edges[0]
    assert edge.stats.requests == 5 and edge.stats.errors == 1
    assert edge.stats.p50_ms == pytest.approx(20.0)  # the caller-side span's duration
    assert {n.service for n in graph.nodes if not n.virtual} == {"front", "db"}


async def test_edge_series_is_per_minute(store: Store) -> None:
    spans = [_client("a", "b", i, minute=i % 3) for i in range(9)]
    await store.insert("otel_traces", trace_columns(spans))

    points = await edge_series(store, WINDOW, caller="a", callee="b")

    assert [p.minute for p in points] == [T0 + timedelta(minutes=m) for m in range(3)]
    assert all(p.stats.requests == 3 for p in points)


def test_parse_time_forms_and_errors() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("now-2h", now=now) == now - timedelta(hours=2)
    assert parse_time("2026-01-01T00:00:00") == now
    assert parse_time("1767225600") == now
    with pytest.raises(ValueError, match="not ISO 8601"):
        parse_time("yesterday")
    with pytest.raises(ValueError, match="after its start"):
        TimeWindow(now, now)
