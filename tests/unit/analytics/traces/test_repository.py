from __future__ import annotations

from dataclasses import replace

import pytest

from analytics.traces import repository as repository_module
from analytics.traces.query import AttributeFilter, Cursor, TraceQuery
from analytics.traces.repository import TraceRepository, matches_sql
from collector.store import Store
from tests.conftest import trace_columns
from tests.unit.analytics.traces.helpers import (
    MANY,
    MS,
    T0,
    TRACE_A,
    S,
    batch_trace_id,
    sample_spans,
)

HOSTILE = "x'); DROP TABLE otel_traces; --"


def test_every_value_is_a_parameter_never_sql_text() -> None:
    query = TraceQuery(
        start_ns=1,
        end_ns=2,
        service=HOSTILE,
        operation=HOSTILE,
        attributes=(AttributeFilter(HOSTILE, "=~", HOSTILE), AttributeFilter("k", "!=", HOSTILE)),
        min_trace_duration_ns=5,
        cursor=Cursor(7, "a" * 32),
    )
    for sql, params in (matches_sql(query), matches_sql(query, depth=100)):
        assert HOSTILE not in sql
        assert "a" * 32 not in sql
        assert HOSTILE in params.values()


async def test_trace_by_id_reads_only_the_window_the_lookup_table_gives(store: Store) -> None:
    await store.insert("otel_traces", trace_columns(sample_spans()))
    repository = TraceRepository(store)
    assert len(await repository.spans([TRACE_A])) == 4
    # The lookup bounds the read: a trace the lookup does not know is not scanned for.
    await store.command("TRUNCATE TABLE otel_traces_trace_id_ts")
    assert await repository.spans([TRACE_A]) == []


async def test_search_page_and_cursor_continue_in_match_order(store: Store) -> None:
    await store.insert("otel_traces", trace_columns(sample_spans()))
    repository = TraceRepository(store)
    query = TraceQuery(start_ns=(T0 - 1) * S, end_ns=(T0 + 600) * S, limit=2)
    first, cursor = await repository.search(query)
    assert cursor is not None and cursor.trace_id == first[-1].trace_id
    second, _ = await repository.search(
        TraceQuery(query.start_ns, query.end_ns, limit=2, cursor=cursor)
    )
    assert first[-1].match_ns >= second[0].match_ns
    assert not {h.trace_id for h in first} & {h.trace_id for h in second}


async def test_trace_duration_search_examines_bounded_rounds_and_never_skips(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.insert("otel_traces", trace_columns(sample_spans()))
    monkeypatch.setattr(repository_module, "FILTER_DEPTH", 3)
    monkeypatch.setattr(repository_module, "FILTER_ROUNDS", 2)
    repository = TraceRepository(store)
    window = ((T0 - 1) * S, (T0 + 600) * S)
    # No batch trace lasts 2 ms: each page examines 6 traces, returns none, and continues.
    slow = TraceQuery(*window, service="batch", min_trace_duration_ns=2 * MS)
    pages = 0
    cursor: Cursor | None = None
    while True:
        hits, cursor = await repository.search(replace(slow, cursor=cursor))
        pages += 1
        assert hits == []
        if cursor is None:
            break
        assert pages < 10
    assert pages == -(-MANY // 6)
    # Hits found across rounds fill the page in match order.
    fast = TraceQuery(*window, service="batch", max_trace_duration_ns=MS, limit=4)
    hits, cursor = await repository.search(fast)
    assert [h.trace_id for h in hits] == [batch_trace_id(i) for i in range(MANY - 1, MANY - 5, -1)]
    assert cursor == Cursor(hits[-1].match_ns, hits[-1].trace_id)
