"""The Store contract, run against every backend in MESHLENS_TEST_STORES (default: embedded)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from collector.schema import LATEST_VERSION
from collector.store import Store, StoreRejected, StoreUnavailable
from tests.conftest import Event, Link, Span, open_test_store, trace_columns

T0 = 1_764_000_000_123_456_789  # 2025-11-24T16:00:00.123456789Z, ns precision on purpose
TRACE = "0af7651916cd43dd8448eb211c80319c"


def _spans() -> list[Span]:
    return [
        Span(
            service="web",
            name="GET /orders/{id}",
            trace_id=TRACE,
            span_id="b7ad6b7169203331",
            start_ns=T0,
            duration_ns=12_345_678,
            kind="Server",
            status="Ok",
            attributes={"http.response.status_code": "200", "meshlens.route": "orders"},
            resource={"service.name": "web", "k8s.pod.name": "web-0"},
            events=(Event(T0 + 1, "retry", {"attempt": "2"}), Event(T0 + 2, "done")),
            links=(Link("11" * 16, "22" * 8, "k=v", {"reason": "batch"}),),
        ),
        Span(
            service="web",
            name="GET",
            trace_id=TRACE,
            span_id="00f067aa0ba902b7",
            parent_span_id="b7ad6b7169203331",
            start_ns=T0 + 1_000,
            duration_ns=9_000_001,
            kind="Client",
            status="Error",
            status_message="upstream reset",
            attributes={"meshlens.upstream": "orders", "http.response.status_code": "503"},
        ),
    ]


async def _count(store: Store, sql: str) -> int:
    rows = await store.query(sql)
    return int(next(iter(rows[0].values())))


async def test_migrate_twice_records_each_version_once(store: Store) -> None:
    assert await store.migrate() == LATEST_VERSION
    assert await store.migrate() == LATEST_VERSION

    rows = await store.query(
        "SELECT version, count() AS n FROM meshlens_schema_version"
        " GROUP BY version ORDER BY version"
    )

    assert rows == [{"version": v, "n": 1} for v in range(1, LATEST_VERSION + 1)]


async def test_concurrent_migrations_of_a_fresh_database_record_once(store_url: str) -> None:
    database = f"race_{uuid.uuid4().hex[:8]}"
    first = open_test_store(store_url, database=database)
    second = open_test_store(store_url, database=database)
    try:
        versions = await asyncio.gather(first.migrate(), second.migrate())
        rows = await first.query(
            "SELECT version, count() AS n FROM meshlens_schema_version GROUP BY version"
            " ORDER BY version"
        )
        await first.command(f"DROP DATABASE `{database}`")
    finally:
        await first.close()
        await second.close()

    assert list(versions) == [LATEST_VERSION, LATEST_VERSION]
    assert rows == [{"version": v, "n": 1} for v in range(1, LATEST_VERSION + 1)]


async def test_otel_traces_round_trip_keeps_maps_nested_and_nanoseconds(store: Store) -> None:
    written = await store.insert("otel_traces", trace_columns(_spans()), dedup_token="rt-1")

    rows = await store.query(
        "SELECT Timestamp, toUnixTimestamp64Nano(Timestamp) AS ns, TraceId, SpanId, ParentSpanId,"
        " SpanName, SpanKind, ServiceName, ResourceAttributes, SpanAttributes, Duration,"
        " StatusCode, StatusMessage, arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp)"
        " AS event_ns, Events.Name, Events.Attributes, Links.TraceId, Links.TraceState,"
        " Links.Attributes FROM otel_traces WHERE TraceId = {trace:String} ORDER BY Timestamp",
        {"trace": TRACE},
    )

    assert written == 2
    server, client = rows
    assert server["ns"] == T0
    assert server["Timestamp"] == datetime(2025, 11, 24, 16, 0, 0, 123456, tzinfo=UTC)
    assert server["ResourceAttributes"] == {"service.name": "web", "k8s.pod.name": "web-0"}
    assert server["SpanAttributes"]["meshlens.route"] == "orders"
    assert server["Duration"] == 12_345_678
    assert (server["SpanKind"], server["StatusCode"]) == ("Server", "Ok")
    assert server["event_ns"] == [T0 + 1, T0 + 2]
    assert server["Events.Name"] == ["retry", "done"]
    assert server["Events.Attributes"] == [{"attempt": "2"}, {}]
    assert server["Links.TraceId"] == ["11" * 16]
    assert server["Links.TraceState"] == ["k=v"]
    assert server["Links.Attributes"] == [{"reason": "batch"}]
    assert client["ns"] == T0 + 1_000
    assert client["ParentSpanId"] == "b7ad6b7169203331"
    assert (client["SpanKind"], client["StatusCode"]) == ("Client", "Error")
    assert client["StatusMessage"] == "upstream reset"
    assert client["event_ns"] == []


async def test_parameters_with_quotes_and_injection_stay_data(store: Store) -> None:
    evil = "x'); DROP TABLE otel_traces; --\\"
    span = _spans()[0]._replace(service=evil, attributes={"q": 'it\'s "quoted"'})
    await store.insert("otel_traces", trace_columns([span]))

    by_name = await store.query(
        "SELECT ServiceName, SpanAttributes['q'] AS q FROM otel_traces"
        " WHERE ServiceName = {s:String}",
        {"s": evil},
    )
    by_list = await store.query(
        "SELECT count() AS n FROM otel_traces WHERE has({names:Array(String)}, ServiceName)",
        {"names": [evil, "it's", "a\\b"]},
    )
    echoed = await store.query(
        "SELECT {s:String} AS s, {m:Map(String, String)} AS m, {t:DateTime64(6)} AS t",
        {"s": "' OR 1=1 --", "m": {"k'": "v\\'"}, "t": datetime(2025, 1, 2, 3, 4, 5, 6, UTC)},
    )

    assert by_name == [{"ServiceName": evil, "q": 'it\'s "quoted"'}]
    assert by_list == [{"n": 1}]
    assert echoed == [
        {"s": "' OR 1=1 --", "m": {"k'": "v\\'"}, "t": datetime(2025, 1, 2, 3, 4, 5, 6, UTC)}
    ]
    assert await _count(store, "SELECT count() FROM otel_traces") == 1


async def test_dedup_token_makes_a_retried_insert_a_no_op_in_table_and_views(store: Store) -> None:
    columns = trace_columns(_spans())
    counts = (
        "SELECT (SELECT count() FROM otel_traces) AS spans,"
        " (SELECT count() FROM otel_traces_trace_id_ts) AS lookups,"
        " (SELECT sum(count) FROM meshlens_edges_1m) AS edge_calls,"
        " (SELECT sum(count) FROM meshlens_services_1m) AS server_calls"
    )

    await store.insert("otel_traces", columns, dedup_token="batch-7")
    await store.insert("otel_traces", columns, dedup_token="batch-7")
    after_retry = await store.query(counts)
    await store.insert("otel_traces", columns, dedup_token="batch-8")
    after_new_batch = await store.query(counts)

    assert after_retry == [{"spans": 2, "lookups": 1, "edge_calls": 1, "server_calls": 1}]
    assert after_new_batch == [{"spans": 4, "lookups": 2, "edge_calls": 2, "server_calls": 2}]


async def test_bad_sql_is_rejected_with_the_engine_code(store: Store) -> None:
    with pytest.raises(StoreRejected) as syntax:
        await store.query("SELEC 1")
    with pytest.raises(StoreRejected) as unknown:
        await store.command("INSERT INTO no_such_table SELECT 1")

    assert syntax.value.code == 62  # SYNTAX_ERROR
    assert unknown.value.code == 60  # UNKNOWN_TABLE


async def test_bad_insert_data_is_rejected_naming_the_problem(store: Store) -> None:
    good = trace_columns(_spans())

    with pytest.raises(StoreRejected, match=r"unknown or non-insertable columns.*Nope"):
        await store.insert("otel_traces", {**good, "Nope": [1, 2]})
    with pytest.raises(StoreRejected, match="differ in length"):
        await store.insert("otel_traces", {**good, "Duration": [1]})
    with pytest.raises(StoreRejected, match="Duration"):
        await store.insert("otel_traces", {**good, "Duration": ["slow", "fast"]})
    with pytest.raises(StoreRejected, match="no such table"):
        await store.insert("otel_nothing", {"a": [1]})
    with pytest.raises(StoreRejected, match="ResourceAttributeItems"):
        await store.insert("otel_traces", {**good, "ResourceAttributeItems": [[], []]})


async def test_insert_leaves_unlisted_columns_at_their_defaults(store: Store) -> None:
    await store.insert("otel_traces", {"Timestamp": [T0], "TraceId": [TRACE], "ServiceName": ["a"]})

    rows = await store.query("SELECT ServiceName, Duration, SpanAttributes FROM otel_traces")

    assert rows == [{"ServiceName": "a", "Duration": 0, "SpanAttributes": {}}]


async def test_ping_answers_and_a_closed_store_is_unavailable(store: Store, store_url: str) -> None:
    other = open_test_store(store_url)
    await other.close()

    assert await store.ping() is True
    assert await other.ping() is False
    with pytest.raises(StoreUnavailable, match="closed"):
        await other.query("SELECT 1")
    assert await store.ping() is True  # the shared engine stays up for the remaining user


async def test_a_broken_embedded_session_is_unavailable_then_reopened(
    store: Store, store_url: str
) -> None:
    if not store_url.startswith("chdb://"):
        pytest.skip("embedded-only: breaks the chdb session underneath the store")
    from collector.store import embedded

    await store.insert("otel_traces", trace_columns(_spans()))
    engine = embedded._engine
    assert engine is not None
    # Close the chdb session behind the store's back, as if the engine had gone away.
    await asyncio.wrap_future(engine.executor.submit(engine._session.close))

    with pytest.raises(StoreUnavailable):
        await store.query("SELECT count() AS n FROM otel_traces")
    assert await store.query("SELECT count() AS n FROM otel_traces") == [{"n": 2}]


async def test_an_empty_batch_writes_nothing(store: Store) -> None:
    empty: dict[str, list[object]] = {name: [] for name in trace_columns(_spans())}

    assert await store.insert("otel_traces", empty, dedup_token="empty") == 0
    assert await _count(store, "SELECT count() FROM otel_traces") == 0


async def test_datetime_and_uint32_result_columns_are_told_apart(store: Store) -> None:
    rows = await store.query(
        "SELECT toDateTime('2025-01-02 03:04:05', 'UTC') AS t, toUInt32(7) AS n,"
        " [toDateTime(0, 'UTC')] AS ts"
    )
    shown = await store.query("SHOW TABLES LIKE 'otel_traces'")

    assert rows == [
        {
            "t": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
            "n": 7,
            "ts": [datetime(1970, 1, 1, tzinfo=UTC)],
        }
    ]
    assert shown == [{"name": "otel_traces"}]
