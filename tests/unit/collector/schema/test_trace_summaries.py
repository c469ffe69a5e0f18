"""Schema versions 5 and 6: trace summaries and the time-ordered span copy, filled on upgrade."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from collector.schema import LATEST_VERSION, MIGRATIONS, SchemaOptions, all_statements, migrate
from collector.schema import meshlens_trace_summaries as summaries
from collector.store import Store
from tests.conftest import Span, open_test_store, trace_columns

T0 = 1_780_000_000
S = 1_000_000_000
MS = 1_000_000

# The definition the search used before version 5 (and still uses without the table).
SPAN_SUMMARY = """
SELECT TraceId AS trace_id, toUnixTimestamp64Nano(min(Timestamp)) AS start_ns,
    toUnixTimestamp64Nano(max(Timestamp)) AS last_ns,
    max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration)) AS end_ns,
    toInt64(count()) AS span_count,
    toInt64(countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR'))) AS error_count,
    argMin(ServiceName, (ParentSpanId != '', Timestamp)) AS root_service,
    argMin(SpanName, (ParentSpanId != '', Timestamp)) AS root_name,
    arraySort(groupUniqArray(ServiceName)) AS services
FROM otel_traces GROUP BY TraceId ORDER BY trace_id
"""
TABLE_SUMMARY = """
SELECT TraceId AS trace_id, toUnixTimestamp64Nano(min(Start)) AS start_ns,
    toUnixTimestamp64Nano(max(LastStart)) AS last_ns, max(EndNs) AS end_ns,
    toInt64(sum(SpanCount)) AS span_count, toInt64(sum(ErrorCount)) AS error_count,
    tupleElement(argMinMerge(Root), 1) AS root_service,
    tupleElement(argMinMerge(Root), 2) AS root_name,
    arraySort(groupUniqArrayArray(Services)) AS services
FROM meshlens_trace_summaries GROUP BY TraceId ORDER BY trace_id
"""


def _spans(day: int, traces: int, first: int = 0) -> list[Span]:
    """`traces` 3-span traces (root web, then orders, then an erroring db) on day `day`."""
    spans = []
    for t in range(first, first + traces):
        trace_id = f"{t + 1:032x}"
        start = (T0 + day * 86_400 + t * 7) * S
        spans += [
            Span("web", "GET /", trace_id, f"{t:08x}00000001", start, 30 * MS),
            Span(
                "orders",
                "POST /o",
                trace_id,
                f"{t:08x}00000002",
                start + MS,
                20 * MS,
                parent_span_id=f"{t:08x}00000001",
            ),
            Span(
                "db",
                "SELECT",
                trace_id,
                f"{t:08x}00000003",
                start + 2 * MS,
                5 * MS,
                kind="Client",
                parent_span_id=f"{t:08x}00000002",
                status="Error" if t % 3 == 0 else "Unset",
            ),
        ]
    return spans


async def _compare(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return await store.query(SPAN_SUMMARY), await store.query(TABLE_SUMMARY)


async def test_upgrade_from_version_4_fills_summaries_of_stored_traces(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"v5_{uuid.uuid4().hex[:8]}"
    store = open_test_store(store_url, database=database)
    # Small chunks: the fill runs per partition and per TraceId hash bucket.
    monkeypatch.setattr(summaries, "FILL_CHUNK_ROWS", 40)
    try:
        assert (
            await migrate(store, SchemaOptions(database=database), migrations=MIGRATIONS[:4]) == 4
        )
        await store.insert("otel_traces", trace_columns(_spans(0, 30)), dedup_token="a")
        await store.insert("otel_traces", trace_columns(_spans(1, 20, first=100)), dedup_token="b")
        assert await store.migrate() == LATEST_VERSION
        filled = await _compare(store)
        # Spans of new and of already summarised traces arrive after the upgrade: the view.
        later = _spans(0, 10, first=25) + _spans(2, 5, first=200)
        await store.insert("otel_traces", trace_columns(later), dedup_token="c")
        kept = await _compare(store)
        await store.command(f"DROP DATABASE `{database}`")
    finally:
        await store.close()

    assert len(filled[0]) == 50 and filled[0] == filled[1]
    assert len(kept[0]) == 60 and kept[0] == kept[1]
    assert {r["span_count"] for r in kept[1]} == {3, 6}  # traces 25..29 got spans twice


async def test_an_interrupted_fill_is_redone_not_added_to(store_url: str) -> None:
    database = f"v5r_{uuid.uuid4().hex[:8]}"
    store = open_test_store(store_url, database=database)
    options = SchemaOptions(database=database)
    try:
        await migrate(store, options, migrations=MIGRATIONS[:4])
        await store.insert("otel_traces", trace_columns(_spans(0, 12)))
        # A first attempt that stopped after its fill, before the view and the version record.
        await store.command(summaries.statements(options)[0])
        day = "20260528"  # otel_traces' partition id for T0's day
        await store.command(
            summaries.fill_sql(options), {"partition": day, "buckets": 1, "bucket": 0}
        )
        partial = (await _compare(store))[1]
        assert await store.migrate() == LATEST_VERSION
        filled = await _compare(store)
        await store.command(f"DROP DATABASE `{database}`")
    finally:
        await store.close()

    assert partial  # the first attempt did write
    assert filled[0] == filled[1] and {r["span_count"] for r in filled[1]} == {3}


def test_cluster_mode_renders_table_and_view_on_cluster_and_no_fill() -> None:
    statements = summaries.statements(SchemaOptions(database="obs", cluster="main"))

    assert len(statements) == 3  # local table, Distributed table, view
    assert all(" ON CLUSTER `main`" in s.split("\n")[0] for s in statements)
    assert "FROM `obs`.`otel_traces_local`" in statements[2]
    assert "TO `obs`.`meshlens_trace_summaries_local`" in statements[2]
    assert not any(s.startswith("INSERT") for s in all_statements(SchemaOptions()))


async def test_upgrade_to_version_6_copies_stored_spans_in_time_order(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collector.schema import meshlens_spans_by_time as by_time

    database = f"v6_{uuid.uuid4().hex[:8]}"
    store = open_test_store(store_url, database=database)
    monkeypatch.setattr(by_time, "FILL_CHUNK_ROWS", 25)
    columns = ", ".join(by_time.COLUMNS)
    spans = f"SELECT {columns} FROM otel_traces ORDER BY Timestamp, TraceId"
    copy = f"SELECT {columns} FROM meshlens_spans_by_time ORDER BY Timestamp, TraceId"
    try:
        await migrate(store, SchemaOptions(database=database), migrations=MIGRATIONS[:5])
        await store.insert("otel_traces", trace_columns(_spans(0, 30)), dedup_token="a")
        assert await store.migrate() == LATEST_VERSION
        await store.insert("otel_traces", trace_columns(_spans(1, 10)), dedup_token="b")
        # A retried insert (same token) is dropped by the table and by the view alike.
        await store.insert("otel_traces", trace_columns(_spans(1, 10)), dedup_token="b")
        original, copied = await store.query(spans), await store.query(copy)
        await store.command(f"DROP DATABASE `{database}`")
    finally:
        await store.close()

    assert len(original) == 120 and copied == original
    assert by_time.statements(SchemaOptions(cluster="main")) == []
