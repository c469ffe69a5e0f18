"""The schema: exporter-exact columns, TTL and cluster DDL, and the edge/service aggregate views."""

from __future__ import annotations

import inspect
import uuid
from datetime import UTC, datetime

import pytest

from collector.schema import LATEST_VERSION, MIGRATIONS, SchemaOptions, all_statements, migrate
from collector.schema.queries import (
    EDGE_ROUTES_OVER_WINDOW,
    EDGES_OVER_WINDOW,
    SERVICES_OVER_WINDOW,
)
from collector.store import Store
from tests.conftest import Span, open_test_store, trace_columns

_LC = "LowCardinality(String)"
_ATTRS = f"Map({_LC}, String)"
OTEL_TRACES = [
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", _LC),
    ("SpanKind", _LC),
    ("ServiceName", _LC),
    ("ResourceAttributes", _ATTRS),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", _ATTRS),
    ("Duration", "UInt64"),
    ("StatusCode", _LC),
    ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"),
    ("Events.Name", f"Array({_LC})"),
    ("Events.Attributes", f"Array({_ATTRS})"),
    ("Links.TraceId", "Array(String)"),
    ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", f"Array({_ATTRS})"),
]
METRICS_PREFIX = [
    ("ResourceAttributes", _ATTRS),
    ("ResourceSchemaUrl", "String"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("ScopeAttributes", _ATTRS),
    ("ScopeDroppedAttrCount", "UInt32"),
    ("ScopeSchemaUrl", "String"),
    ("ServiceName", _LC),
    ("MetricName", _LC),
    ("MetricDescription", "String"),
    ("MetricUnit", "String"),
    ("Attributes", _ATTRS),
    ("StartTimeUnix", "DateTime"),
    ("TimeUnix", "DateTime"),
]
EXEMPLARS = [
    ("Exemplars.FilteredAttributes", f"Array({_ATTRS})"),
    ("Exemplars.TimeUnix", "Array(DateTime)"),
    ("Exemplars.Value", "Array(Float64)"),
    ("Exemplars.SpanId", "Array(String)"),
    ("Exemplars.TraceId", "Array(String)"),
]
METRICS_SPECIFIC = {
    "otel_metrics_gauge": [("Value", "Float64"), ("Flags", "UInt32"), *EXEMPLARS],
    "otel_metrics_sum": [
        ("Value", "Float64"),
        ("Flags", "UInt32"),
        *EXEMPLARS,
        ("AggregationTemporality", "Int32"),
        ("IsMonotonic", "Bool"),
    ],
    "otel_metrics_histogram": [
        ("Count", "UInt64"),
        ("Sum", "Float64"),
        ("BucketCounts", "Array(UInt64)"),
        ("ExplicitBounds", "Array(Float64)"),
        *EXEMPLARS,
        ("Flags", "UInt32"),
        ("Min", "Float64"),
        ("Max", "Float64"),
        ("AggregationTemporality", "Int32"),
    ],
    "otel_metrics_exponential_histogram": [
        ("Count", "UInt64"),
        ("Sum", "Float64"),
        ("Scale", "Int32"),
        ("ZeroCount", "UInt64"),
        ("PositiveOffset", "Int32"),
        ("PositiveBucketCounts", "Array(UInt64)"),
        ("NegativeOffset", "Int32"),
        ("NegativeBucketCounts", "Array(UInt64)"),
        *EXEMPLARS,
        ("Flags", "UInt32"),
        ("Min", "Float64"),
        ("Max", "Float64"),
        ("AggregationTemporality", "Int32"),
    ],
    "otel_metrics_summary": [
        ("Count", "UInt64"),
        ("Sum", "Float64"),
        ("ValueAtQuantiles.Quantile", "Array(Float64)"),
        ("ValueAtQuantiles.Value", "Array(Float64)"),
        ("Flags", "UInt32"),
    ],
}


async def _columns(store: Store, table: str) -> list[tuple[str, str]]:
    rows = await store.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase()"
        " AND table = {t:String} AND default_kind != 'ALIAS' ORDER BY position",
        {"t": table},
    )
    return [(row["name"], row["type"]) for row in rows]


async def test_otel_traces_has_the_exporter_columns_in_insert_order(store: Store) -> None:
    assert await _columns(store, "otel_traces") == OTEL_TRACES
    assert await _columns(store, "otel_traces_trace_id_ts") == [
        ("TraceId", "String"),
        ("Start", "SimpleAggregateFunction(min, DateTime)"),
        ("End", "SimpleAggregateFunction(max, DateTime)"),
    ]


@pytest.mark.parametrize("table", sorted(METRICS_SPECIFIC))
async def test_metrics_tables_have_the_v0160_exporter_columns(store: Store, table: str) -> None:
    assert await _columns(store, table) == METRICS_PREFIX + METRICS_SPECIFIC[table]


def test_ttl_renders_like_the_exporter_and_is_absent_by_default() -> None:
    with_ttl = "\n".join(all_statements(SchemaOptions(ttl_days=7)))
    without = "\n".join(all_statements(SchemaOptions()))

    assert "TTL toDateTime(Timestamp) + toIntervalDay(7)\n" in with_ttl
    assert "TTL toDateTime(Start) + toIntervalDay(7)\n" in with_ttl
    assert "TTL toDateTime(TimeUnix) + toIntervalDay(7)\n" in with_ttl
    assert "TTL minute + toIntervalDay(7)\n" in with_ttl
    assert "TTL" not in without


async def test_ttl_tables_are_created_by_the_engine(store_url: str) -> None:
    database = f"ttl_{uuid.uuid4().hex[:8]}"
    store = open_test_store(store_url, database=database, ttl_days=3)
    try:
        await store.migrate()
        rows = await store.query(
            "SELECT create_table_query AS q FROM system.tables"
            " WHERE database = {db:String} AND name = 'otel_traces'",
            {"db": database},
        )
        await store.command(f"DROP DATABASE `{database}`")
    finally:
        await store.close()

    assert "TTL toDateTime(Timestamp) + toIntervalDay(3)" in rows[0]["q"]


def test_cluster_mode_emits_replicated_local_tables_and_distributed_public_ones() -> None:
    statements = all_statements(SchemaOptions(database="obs", cluster="main", ttl_days=2))
    text = "\n".join(statements)
    traces = next(s for s in statements if "`obs`.`otel_traces_local`" in s.split("\n")[0])
    public = next(
        s for s in statements if s.startswith("CREATE TABLE IF NOT EXISTS `obs`.`otel_traces` ")
    )
    view = next(s for s in statements if "`otel_traces_trace_id_ts_mv`" in s.split("\n")[0])

    assert statements[0] == "CREATE DATABASE IF NOT EXISTS `obs` ON CLUSTER `main`"
    assert all(" ON CLUSTER `main`" in s.split("\n")[0] for s in statements)
    assert (
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"
        in traces
    )
    assert "TTL toDateTime(Timestamp) + toIntervalDay(2)" in traces
    assert "non_replicated_deduplication_window" not in text
    assert public == (
        "CREATE TABLE IF NOT EXISTS `obs`.`otel_traces` ON CLUSTER `main`\n"
        "AS `obs`.`otel_traces_local`\n"
        "ENGINE = Distributed(`main`, `obs`, `otel_traces_local`, cityHash64(TraceId))"
    )
    assert "TO `obs`.`otel_traces_trace_id_ts_local`" in view
    assert "FROM `obs`.`otel_traces_local`" in view
    assert "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}" in text
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}" in text


def test_single_node_mode_has_no_cluster_parts() -> None:
    text = "\n".join(all_statements(SchemaOptions()))

    assert "ON CLUSTER" not in text
    assert "Replicated" not in text
    assert "Distributed" not in text
    assert "non_replicated_deduplication_window = 10000" in text


def test_options_refuse_unsafe_identifiers() -> None:
    with pytest.raises(ValueError, match="invalid ClickHouse identifier"):
        SchemaOptions(cluster="main` ; DROP")


MINUTE = 1_764_000_000  # 2025-11-24T16:00:00Z, a minute boundary
MS = 1_000_000


def _odd(
    service: str,
    kind: str,
    span_id: str,
    attributes: dict[str, str],
    *,
    name: str = "GET",
    status: str = "Unset",
    scope: str = "meshlens.sidecar",
) -> Span:
    return Span(
        service=service,
        name=name,
        trace_id="f" * 32,
        span_id=span_id * 16,
        start_ns=(MINUTE + 30) * 10**9,
        duration_ns=4 * MS,
        kind=kind,
        status=status,
        attributes=attributes,
        scope_name=scope,
    )


def _edge_spans() -> list[Span]:
    spans: list[Span] = []
    for i in range(100):
        slow = i >= 80
        spans.append(
            Span(
                service="web",
                name="GET",
                trace_id=f"{i:032x}",
                span_id=f"{i:016x}",
                start_ns=(MINUTE + (i % 2) * 60 + 5) * 10**9,
                duration_ns=(1000 if slow else 10) * MS,
                kind="Client",
                status="Error" if slow else "Unset",
                attributes={
                    "meshlens.upstream": "orders",
                    "server.address": "10.0.0.7",
                    "meshlens.route": "list",
                    "http.response.status_code": "503" if slow else "200",
                },
            )
        )
    spans += [
        _odd(
            "web",
            "Client",
            "a",
            {"server.address": "cdn.example", "http.response.status_code": "500"},
        ),
        _odd("web", "Client", "b", {}),  # no callee: not an edge
        _odd(
            "orders", "Server", "c", {"meshlens.route": "list", "http.response.status_code": "200"}
        ),
        _odd("orders", "Server", "d", {}, name="GET /health", status="Error"),
        # The applications' own spans of the same calls (OTel SDK, demo scope): not counted again.
        _odd("web", "Client", "e", {"server.address": "orders"}, scope="meshlens.demo"),
        _odd("orders", "Server", "f", {"http.route": "/list"}, name="GET /list", scope="x"),
    ]
    return spans


_WINDOW = {
    "start": datetime.fromtimestamp(MINUTE, UTC),
    "end": datetime.fromtimestamp(MINUTE + 120, UTC),
}


async def test_edges_view_aggregates_client_spans_and_example_query_reports_red(
    store: Store,
) -> None:
    await store.insert("otel_traces", trace_columns(_edge_spans()[:50]), dedup_token="e1")
    await store.insert("otel_traces", trace_columns(_edge_spans()[50:]), dedup_token="e2")

    edges = await store.query(EDGES_OVER_WINDOW, _WINDOW)
    later = await store.query(
        EDGES_OVER_WINDOW,
        {"start": _WINDOW["end"], "end": datetime.fromtimestamp(MINUTE + 600, UTC)},
    )

    assert [(e["caller"], e["callee"]) for e in edges] == [
        ("web", "cdn.example"),
        ("web", "orders"),
    ]
    cdn, orders = edges
    assert (cdn["requests"], cdn["errors"]) == (1, 1)  # status 500 counts as an error
    assert (orders["requests"], orders["errors"]) == (100, 20)
    assert orders["rate_per_s"] == pytest.approx(100 / 120)
    assert orders["error_ratio"] == pytest.approx(0.2)
    assert orders["mean_ms"] == pytest.approx((80 * 10 + 20 * 1000) / 100)
    assert (orders["p50_ms"], orders["p90_ms"], orders["p99_ms"]) == pytest.approx((10, 1000, 1000))
    assert later == []


async def test_edge_routes_and_services_queries(store: Store) -> None:
    await store.insert("otel_traces", trace_columns(_edge_spans()), dedup_token="e1")

    routes = await store.query(
        EDGE_ROUTES_OVER_WINDOW, {**_WINDOW, "caller": "web", "callee": "orders"}
    )
    services = await store.query(SERVICES_OVER_WINDOW, _WINDOW)
    per_minute = await store.query(
        "SELECT minute, sum(count) AS n FROM meshlens_edges_1m WHERE callee = 'orders'"
        " GROUP BY minute ORDER BY minute"
    )

    assert [(r["route"], r["status_code"], r["requests"], r["errors"]) for r in routes] == [
        ("list", 200, 80, 0),
        ("list", 503, 20, 20),
    ]
    assert [(s["service"], s["route"], s["requests"], s["errors"]) for s in services] == [
        ("orders", "GET /health", 1, 1),
        ("orders", "list", 1, 0),
    ]
    assert per_minute == [
        {"minute": _WINDOW["start"], "n": 50},
        {"minute": datetime.fromtimestamp(MINUTE + 60, UTC), "n": 50},
    ]


async def test_version_4_views_count_sidecar_spans_once_where_version_2_counted_app_spans_too(
    store_url: str,
) -> None:
    database = f"v4_{uuid.uuid4().hex[:8]}"
    store = open_test_store(store_url, database=database)
    window = {"start": _WINDOW["start"], "end": _WINDOW["end"]}
    edges = "SELECT toUInt64(sum(count)) AS n FROM meshlens_edges_1m"
    services = "SELECT toUInt64(sum(count)) AS n FROM meshlens_services_1m"
    try:
        await migrate(store, SchemaOptions(database=database), migrations=MIGRATIONS[:3])
        await store.insert("otel_traces", trace_columns(_edge_spans()), dedup_token="a")
        before = (await store.query(edges))[0]["n"], (await store.query(services))[0]["n"]
        await store.command("TRUNCATE TABLE meshlens_edges_1m")
        await store.command("TRUNCATE TABLE meshlens_services_1m")
        assert await store.migrate() == LATEST_VERSION
        await store.insert("otel_traces", trace_columns(_edge_spans()), dedup_token="b")
        after = (await store.query(edges))[0]["n"], (await store.query(services))[0]["n"]
        callees = await store.query(EDGES_OVER_WINDOW, window)
        await store.command(f"DROP DATABASE `{database}`")
    finally:
        await store.close()

    assert before == (102, 3)  # the demo app's CLIENT and SERVER spans counted as well
    assert after == (101, 2)
    assert [(e["caller"], e["callee"]) for e in callees] == [
        ("web", "cdn.example"),
        ("web", "orders"),
    ]


def test_sidecar_scope_is_the_one_sidecar_spans_are_written_with() -> None:
    from collector.schema.meshlens_edges_1m import SIDECAR_SCOPE
    from sidecar.telemetry.otlp import TraceEncoder

    assert inspect.signature(TraceEncoder).parameters["scope_name"].default == SIDECAR_SCOPE


async def test_migrate_applies_only_the_missing_versions(store_url: str) -> None:
    database = f"inc_{uuid.uuid4().hex[:8]}"
    store = open_test_store(store_url, database=database)
    tables = (
        "SELECT name FROM system.tables WHERE database = {db:String}"
        " AND name IN ('otel_traces', 'otel_metrics_summary', 'meshlens_edges_1m') ORDER BY name"
    )
    try:
        first = await migrate(store, SchemaOptions(database=database), migrations=MIGRATIONS[:1])
        after_v1 = await store.query(tables, {"db": database})
        # If version 1 were applied again, this table would come back.
        await store.command(f"DROP TABLE `{database}`.otel_metrics_summary")
        second = await store.migrate()
        after_v2 = await store.query(tables, {"db": database})
        versions = await store.query(
            f"SELECT version FROM `{database}`.meshlens_schema_version ORDER BY version"
        )
        await store.command(f"DROP DATABASE `{database}`")
    finally:
        await store.close()

    assert (first, second) == (1, LATEST_VERSION)
    assert [r["name"] for r in after_v1] == ["otel_metrics_summary", "otel_traces"]
    assert [r["name"] for r in after_v2] == ["meshlens_edges_1m", "otel_traces"]
    assert versions == [{"version": v} for v in range(1, LATEST_VERSION + 1)]


async def test_otel_logs_takes_exporter_inserts_and_fills_derived_columns(store: Store) -> None:
    await store.insert(
        "otel_logs",
        {
            "Timestamp": [T0_LOG],
            "TraceId": ["ab" * 16],
            "SeverityText": ["ERROR"],
            "SeverityNumber": [17],
            "ServiceName": ["orders"],
            "Body": ["upstream reset"],
            "ResourceAttributes": [{"k8s.pod.name": "orders-0"}],
            "LogAttributes": [{"http.route": "/list"}],
        },
        dedup_token="logs-1",
    )

    rows = await store.query(
        "SELECT TimestampTime, `__otel_materialized_k8s.pod.name` AS pod, Body FROM otel_logs"
    )

    assert rows == [
        {
            "TimestampTime": datetime.fromtimestamp(T0_LOG // 10**9, UTC),
            "pod": "orders-0",
            "Body": "upstream reset",
        }
    ]


T0_LOG = 1_764_000_123_456_789_000
