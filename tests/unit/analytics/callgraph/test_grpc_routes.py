"""gRPC calls on the service map: the method is the route (as the sidecar writes client spans)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from analytics.callgraph import TimeWindow, service_map
from analytics.main import create_app
from collector.store import Store
from tests.conftest import Span, trace_columns
from tests.unit.analytics.controlplane.helpers import VIEWER, make_settings, never

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
NS = int(T0.timestamp()) * 1_000_000_000
WINDOW = TimeWindow(T0, T0 + timedelta(minutes=10))


def _grpc_client(i: int, service: str, method: str, code: int, ms: int) -> Span:
    """A sidecar CLIENT attempt span of a gRPC call, with the attributes exchange.py writes:
    the HTTP status is 200 whatever the gRPC status; a non-OK status makes the span an error."""
    return Span(
        service="web",
        name=f"{service}/{method}",
        kind="Client",
        trace_id=f"{i + 1:032x}",
        span_id=f"{i + 1:016x}",
        start_ns=NS + i * 1_000_000,
        duration_ns=ms * 1_000_000,
        status="Error" if code else "Unset",
        scope_name="meshlens.sidecar",
        attributes={
            "http.request.method": "POST",
            "server.address": "10.0.0.7",
            "server.port": "15006",
            "meshlens.upstream": "cart",
            "meshlens.route": f"{service}/{method}",
            "meshlens.attempt": "1",
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
            "rpc.grpc.status_code": str(code),
            "http.response.status_code": "200",
        },
    )


def _spans() -> list[Span]:
    spans = [_grpc_client(i, "shop.Cart", "Add", 0, 10) for i in range(6)]
    spans += [_grpc_client(10 + i, "shop.Cart", "Add", 14, 10) for i in range(2)]  # UNAVAILABLE
    spans += [_grpc_client(20 + i, "shop.Cart", "Get", 0, 4) for i in range(3)]
    return spans


async def test_grpc_methods_are_the_routes_of_the_edge_with_their_errors(store: Store) -> None:
    await store.insert("otel_traces", trace_columns(_spans()))

    graph = await service_map(store, WINDOW, route_percentiles=True)

    assert graph.source == "aggregates"
    assert [(e.caller, e.callee) for e in graph.edges] == [("web", "cart")]
    edge = graph.edges[0]
    assert edge.stats.requests == 11 and edge.stats.errors == 2
    routes = dict(edge.routes)
    assert set(routes) == {"shop.Cart/Add", "shop.Cart/Get"}
    assert routes["shop.Cart/Add"].requests == 8 and routes["shop.Cart/Add"].errors == 2
    assert routes["shop.Cart/Get"].requests == 3 and routes["shop.Cart/Get"].errors == 0
    assert routes["shop.Cart/Get"].p50_ms == pytest.approx(4.0)


async def test_map_endpoint_lists_grpc_method_routes(store: Store, tmp_path: Path) -> None:
    await store.insert("otel_traces", trace_columns(_spans()))
    app = create_app(make_settings(tmp_path), store=store, sleep=never)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
            response = await client.get(
                "/api/v1/services/map",
                params={"from": WINDOW.start.isoformat(), "to": WINDOW.end.isoformat()},
                headers=VIEWER,
            )
    assert response.status_code == 200
    (edge,) = response.json()["edges"]
    assert (edge["caller"], edge["callee"]) == ("web", "cart")
    routes = {r["route"]: r["stats"] for r in edge["routes"]}
    assert routes["shop.Cart/Add"]["requests"] == 8
    assert routes["shop.Cart/Add"]["errors"] == 2
    assert routes["shop.Cart/Get"]["errors"] == 0
