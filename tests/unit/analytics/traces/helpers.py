"""Shared data and the `api` fixture for the trace and Jaeger API tests (real app, embedded store).

Traces (T0 = a fixed wall-clock second; the app's clock is NOW = T0 + 600 s):
  TRACE_A  web GET /checkout (Server, 120 ms, root) -> web "GET" Client -> orders POST /orders
           Server (Error, 80 ms, http.route=/orders, event "exception") -> orders SELECT Client
  TRACE_B  web GET /home (Server, 10 ms, root), http.response.status_code=200
  TRACE_C  orders POST /orders (Server, 30 ms, root, customer.tier=gold), 64-bit id
  plus MANY traces of `batch` (GET /item, 1 ms each) for paging.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from analytics.main import create_app
from collector.store import Store
from tests.conftest import Event, Link, Span, trace_columns
from tests.unit.analytics.controlplane.helpers import (
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    make_settings,
    never,
)

T0 = 1_780_000_000  # 2026-05-28, seconds
NOW = T0 + 600
MS = 1_000_000
S = 1_000_000_000
TRACE_A = "0af7651916cd43dd8448eb211c80319c"
TRACE_B = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_C = "00000000000000001234567890abcdef"
MANY = 25
VIEWER = {"authorization": f"Bearer {VIEWER_TOKEN}"}
OPERATOR = {"authorization": f"Bearer {OPERATOR_TOKEN}"}


def batch_trace_id(i: int) -> str:
    return f"{i + 1:032x}".replace("0", "b", 1)


def sample_spans() -> list[Span]:
    t = T0 * S
    spans = [
        Span(
            "web",
            "GET /checkout",
            TRACE_A,
            "a000000000000001",
            t,
            120 * MS,
            attributes={"http.request.method": "GET", "http.response.status_code": "500"},
            resource={"service.name": "web", "host.name": "node-1", "process.pid": "42"},
            trace_state="vendor=x",
        ),
        Span(
            "web",
            "GET",
            TRACE_A,
            "a000000000000002",
            t + 5 * MS,
            100 * MS,
            kind="Client",
            parent_span_id="a000000000000001",
            status="Error",
            attributes={"meshlens.upstream": "orders", "peer.ratio": "0.5", "retry": "true"},
            resource={"service.name": "web", "host.name": "node-1", "process.pid": "42"},
        ),
        Span(
            "orders",
            "POST /orders",
            TRACE_A,
            "a000000000000003",
            t + 10 * MS,
            80 * MS,
            parent_span_id="a000000000000002",
            status="Error",
            status_message="db down",
            attributes={"http.route": "/orders", "big": "9007199254740993"},
            events=(Event(t + 50 * MS, "exception", {"exception.message": "boom"}),),
            links=(Link(TRACE_B, "b000000000000001"),),
        ),
        Span(
            "orders",
            "SELECT",
            TRACE_A,
            "a000000000000004",
            t + 20 * MS,
            40 * MS,
            kind="Client",
            parent_span_id="a000000000000003",
            scope_name="db-lib",
            scope_version="1.2",
        ),
        Span(
            "web",
            "GET /home",
            TRACE_B,
            "b000000000000001",
            t + 60 * S,
            10 * MS,
            attributes={"http.response.status_code": "200"},
        ),
        Span(
            "orders",
            "POST /orders",
            TRACE_C,
            "c000000000000001",
            t + 120 * S,
            30 * MS,
            status="Ok",
            attributes={"customer.tier": "gold"},
        ),
    ]
    spans += [
        Span("batch", "GET /item", batch_trace_id(i), f"{i + 1:016x}", t + (200 + i) * S, MS)
        for i in range(MANY)
    ]
    return spans


@dataclass
class Api:
    client: httpx.AsyncClient
    store: Store


@pytest.fixture
async def api(store: Store, tmp_path: Path) -> AsyncIterator[Api]:
    await store.insert("otel_traces", trace_columns(sample_spans()))
    app = create_app(make_settings(tmp_path), store=store, sleep=never, wall_clock=lambda: NOW)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(client, store)


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
