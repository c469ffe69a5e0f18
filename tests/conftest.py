"""Shared fixtures: `store` (a migrated store per URL in MESHLENS_TEST_STORES) and span helpers.

MESHLENS_TEST_STORES is a comma-separated list of store URLs; every test using `store` runs once per
URL. Default: one embedded store, `chdb://<tmp_path>/ch`. A server URL (http://user:pass@host:8123)
gets a fresh database per test, dropped afterwards.

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
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from collector.store import Store, open_store

__all__ = ["Event", "Link", "Span", "store_urls", "trace_columns"]

_ENV = "MESHLENS_TEST_STORES"


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


def store_urls() -> list[str]:
    """The store URLs tests run against (MESHLENS_TEST_STORES, default: embedded)."""
    raw = os.environ.get(_ENV, "")
    urls = [url.strip() for url in raw.split(",") if url.strip()]
    return urls or ["chdb://{tmp_path}/ch"]


def _store_id(url: str) -> str:
    return url.split("://", 1)[0] if url.startswith("chdb://") else url.rsplit("@", 1)[-1]


@pytest.fixture(params=store_urls(), ids=_store_id)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store URL under test (with the real password; tmp_path filled in for chdb)."""
    url: str = request.param
    return url.replace("{tmp_path}", str(tmp_path)) if url.startswith("chdb://") else url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated store: embedded in tmp_path, or a fresh database on a server URL."""
    options: dict[str, object] = {}
    if not store_url.startswith("chdb://"):
        options["database"] = f"meshlens_test_{uuid.uuid4().hex[:12]}"
    opened = open_store(store_url, **options)
    try:
        await opened.migrate()
        yield opened
    finally:
        if "database" in options:
            await opened.command(f"DROP DATABASE IF EXISTS `{options['database']}`")
        await opened.close()
