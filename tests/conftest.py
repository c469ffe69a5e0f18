"""Shared fixtures: `store` (a migrated store per URL in MESHLENS_TEST_STORES) and span helpers.

MESHLENS_TEST_STORES is a comma-separated list of store URLs; every test using `store` runs once per
URL. Default: one embedded store, `chdb://<tmp_path>/ch`. A server URL (http://user:pass@host:8123)
gets a fresh database per test, dropped afterwards. `connect+chdb://{tmp_path}/ch` runs the server
backend (ServerStore, clickhouse-connect) over clickhouse-connect's in-process chdb transport: the
server code path on the real engine, without a server. `open_test_store(url)` opens any of these.

`Span` + `trace_columns(spans)` build the column dict `store.insert("otel_traces", ...)` takes:

    columns = trace_columns([
        Span(service="web", name="GET /", kind="Server", trace_id=T, span_id="a1", start_ns=t0,
             duration_ns=5_000_000, attributes={"http.response.status_code": "200"}),
        Span(service="web", name="GET", kind="Client", trace_id=T, span_id="a2",
             parent_span_id="a1", start_ns=t0 + 1000, duration_ns=3_000_000, status="Error",
             attributes={"meshlens.upstream": "db", "meshlens.route": "query"}),
    ])
    await store.insert("otel_traces", columns, dedup_token="batch-1")
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from collector.schema import SchemaOptions
from collector.store import Store, open_store
from collector.store.server import ServerStore
from collector.store.urls import StoreUrl

__all__ = ["Event", "Link", "Span", "open_test_store", "store_urls", "trace_columns"]

_ENV = "MESHLENS_TEST_STORES"
_CONNECT_CHDB = "connect+chdb://"


class Event(NamedTuple):
    """A span event: time (ns since the epoch), name, attributes."""

    time_ns: int
    name: str
    attributes: Mapping[str, str] = {}


class Link(NamedTuple):
    """A span link."""

    trace_id: str
    span_id: str
    trace_state: str = ""
    attributes: Mapping[str, str] = {}


class Span(NamedTuple):
    """One otel_traces row in the exporter's terms (kind `Server`/`Client`/..., status `Ok`...)."""

    service: str
    name: str
    trace_id: str
    span_id: str
    start_ns: int
    duration_ns: int
    kind: str = "Server"
    parent_span_id: str = ""
    status: str = "Unset"
    status_message: str = ""
    attributes: Mapping[str, str] = {}
    resource: Mapping[str, str] | None = None  # default: {"service.name": service}
    events: tuple[Event, ...] = ()
    links: tuple[Link, ...] = ()
    scope_name: str = "meshlens-test"
    scope_version: str = "0"
    trace_state: str = ""


def trace_columns(spans: Iterable[Span]) -> dict[str, list[Any]]:
    """The otel_traces insert columns (all 22, exporter order) for `spans`."""
    cols: dict[str, list[Any]] = {
        name: []
        for name in (
            "Timestamp TraceId SpanId ParentSpanId TraceState SpanName SpanKind ServiceName "
            "ResourceAttributes ScopeName ScopeVersion SpanAttributes Duration StatusCode "
            "StatusMessage Events.Timestamp Events.Name Events.Attributes Links.TraceId "
            "Links.SpanId Links.TraceState Links.Attributes"
        ).split()
    }
    for span in spans:
        resource = {"service.name": span.service} if span.resource is None else span.resource
        values = (
            span.start_ns,
            span.trace_id,
            span.span_id,
            span.parent_span_id,
            span.trace_state,
            span.name,
            span.kind,
            span.service,
            dict(resource),
            span.scope_name,
            span.scope_version,
            dict(span.attributes),
            span.duration_ns,
            span.status,
            span.status_message,
            [event.time_ns for event in span.events],
            [event.name for event in span.events],
            [dict(event.attributes) for event in span.events],
            [link.trace_id for link in span.links],
            [link.span_id for link in span.links],
            [link.trace_state for link in span.links],
            [dict(link.attributes) for link in span.links],
        )
        for column, value in zip(cols.values(), values, strict=True):
            column.append(value)
    return cols


def address_of_this_host() -> str | None:
    """A non-loopback address of this host, if it has one (the one a route out would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # (UDP: no packet is sent)
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def open_test_store(url: str, *, database: str = "default", ttl_days: int = 0) -> Store:
    """`open_store(url, ...)`, also for `connect+chdb://PATH` (see the module docstring)."""
    if not url.startswith(_CONNECT_CHDB):
        return open_store(url, database=database, ttl_days=ttl_days)
    path = url[len(_CONNECT_CHDB) :]

    def client() -> Any:
        import clickhouse_connect

        return clickhouse_connect.get_client(
            interface="chdb", path=path, settings={"session_timezone": "UTC"}
        )

    return ServerStore(
        StoreUrl(scheme="http", host="in-process-chdb", port=0),
        SchemaOptions(database=database, ttl_days=ttl_days),
        client_factory=client,
    )


def store_urls() -> list[str]:
    """The store URLs tests run against (MESHLENS_TEST_STORES, default: embedded)."""
    raw = os.environ.get(_ENV, "")
    urls = [url.strip() for url in raw.split(",") if url.strip()]
    return urls or ["chdb://{tmp_path}/ch"]


def _embedded(url: str) -> bool:
    return url.startswith(("chdb://", _CONNECT_CHDB))


def _store_id(url: str) -> str:
    return url.split("://", 1)[0] if _embedded(url) else url.rsplit("@", 1)[-1]


@pytest.fixture(params=store_urls(), ids=_store_id)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store URL under test (with the real password; tmp_path filled in for chdb)."""
    url: str = request.param
    return url.replace("{tmp_path}", str(tmp_path)) if _embedded(url) else url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated store: embedded in tmp_path, or a fresh database on a server URL."""
    fresh = not _embedded(store_url)
    database = f"meshlens_test_{uuid.uuid4().hex[:12]}" if fresh else "default"
    opened = open_test_store(store_url, database=database)
    try:
        await opened.migrate()
        yield opened
    finally:
        if fresh:
            await opened.command(f"DROP DATABASE IF EXISTS `{database}`")
        await opened.close()
