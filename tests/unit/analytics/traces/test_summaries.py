"""Search through the summary table (schema v5) and the time-ordered span copy (v6) answers
exactly as grouping otel_traces spans does (the path of a store without those tables)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from analytics.traces import repository as repository_module
from analytics.traces.query import AttributeFilter, Cursor, TraceQuery, TraceSummary
from analytics.traces.repository import TRACE_SLACK_NS, TraceRepository
from collector.store import Store
from tests.conftest import Span, trace_columns

T0 = 1_780_000_000
S = 1_000_000_000
MS = 1_000_000
SERVICES = ("web", "orders", "stock", "pay")
WINDOW = ((T0 - 60) * S, (T0 + 3600) * S)


def _traces(seed: int, count: int) -> tuple[list[Span], list[Span]]:
    """Two insert blocks of `count` random traces; some traces have spans in both blocks, some
    last longer than the search slack, some share a start time, some have errors."""
    rng = random.Random(seed)
    first: list[Span] = []
    second: list[Span] = []
    for t in range(count):
        trace_id = f"{rng.getrandbits(128):032x}"
        start = (T0 + rng.randrange(0, 3000)) * S + rng.randrange(0, 1000) * MS
        if t % 7 == 0:
            start = (T0 + 1000) * S  # equal start times across traces
        spread = 20 * 60 * S if t % 11 == 0 else 50 * MS  # some outlive TRACE_SLACK_NS
        spans = []
        parent = ""
        for j in range(rng.randrange(1, 6)):
            span_id = f"{t:08x}{j:08x}"
            spans.append(
                Span(
                    SERVICES[rng.randrange(len(SERVICES))],
                    f"op-{rng.randrange(3)}",
                    trace_id,
                    span_id,
                    start + (j * spread) // 4,
                    rng.randrange(1, 400) * MS,
                    kind="Client" if j % 2 else "Server",
                    parent_span_id=parent,
                    status="Error" if rng.random() < 0.2 else "Unset",
                    attributes={"http.route": f"/r{rng.randrange(4)}", "tier": "gold"},
                )
            )
            parent = span_id
        if t % 5 == 0 and len(spans) > 1:
            first += spans[:1]
            second += spans[1:]
        else:
            first += spans
    return first, second


async def _fill(store: Store, seed: int = 3, count: int = 120) -> None:
    first, second = _traces(seed, count)
    await store.insert("otel_traces", trace_columns(first))
    await store.insert("otel_traces", trace_columns(second))


QUERIES = [
    TraceQuery(*WINDOW, limit=7),
    TraceQuery(*WINDOW, limit=1),
    TraceQuery(*WINDOW, operation="op-2", span_kind="Client", limit=4),
    TraceQuery(*WINDOW, service="orders", limit=5),
    TraceQuery(*WINDOW, service="web", operation="op-1", limit=3),
    TraceQuery((T0 + 900) * S, (T0 + 1200) * S, limit=4),
    TraceQuery(*WINDOW, attributes=(AttributeFilter("http.route", "=~", "^/r[12]"),), limit=6),
    TraceQuery(*WINDOW, status="Error", limit=5),
    TraceQuery(*WINDOW, service="stock", min_trace_duration_ns=200 * MS, limit=4),
    TraceQuery(*WINDOW, max_trace_duration_ns=300 * MS, limit=5),
    TraceQuery(*WINDOW, min_trace_duration_ns=10 * 60 * S, limit=2),
]


async def _all_pages(
    repository: TraceRepository, query: TraceQuery
) -> list[tuple[list[TraceSummary], Cursor | None]]:
    pages = []
    cursor: Cursor | None = None
    for _ in range(200):
        hits, cursor = await repository.search(replace(query, cursor=cursor))
        pages.append((hits, cursor))
        if cursor is None:
            return pages
    raise AssertionError("paging did not end")


async def test_every_page_equals_the_span_grouping_answer(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(store)
    # Small rounds so trace-level filters run several rounds and chunks per page.
    monkeypatch.setattr(repository_module, "FILTER_DEPTH", 9)
    monkeypatch.setattr(repository_module, "FILTER_ROUNDS", 2)
    repository = TraceRepository(store)
    with_table = [await _all_pages(repository, q) for q in QUERIES]
    for table in ("meshlens_trace_summaries", "meshlens_spans_by_time"):
        await store.command(f"DROP TABLE {table}_mv")
        await store.command(f"DROP TABLE {table}")
    without = [await _all_pages(repository, q) for q in QUERIES]

    assert with_table == without
    assert all(pages[0][0] for pages in with_table)  # every query has hits
    assert any(len(pages) > 2 for pages in with_table)  # and paging is exercised


async def test_summary_table_serves_traces_inside_the_window_and_not_others(
    store: Store,
) -> None:
    await _fill(store)
    repository = TraceRepository(store)
    ids = [r["TraceId"] for r in await store.query("SELECT DISTINCT TraceId FROM otel_traces")]
    everything = await repository._table_summaries(ids, 0, 2**62)
    narrow = await repository._table_summaries(ids, (T0 + 1000) * S, (T0 + 1001) * S)
    spans = await store.query(
        "SELECT TraceId AS id, toInt64(count()) AS n, min(Timestamp) AS lo, max(Timestamp) AS hi"
        " FROM otel_traces GROUP BY TraceId"
    )

    assert set(everything) == set(ids)  # traces split over two inserts merge into one summary
    assert {r["id"]: r["n"] for r in spans} == {t: r["span_count"] for t, r in everything.items()}
    inside = {
        r["id"]
        for r in spans
        if T0 + 1000 <= r["lo"].timestamp() and r["hi"].timestamp() < T0 + 1001
    }
    assert set(narrow) == inside and inside


async def test_a_trace_longer_than_the_slack_is_summarised_over_the_window_only(
    store: Store,
) -> None:
    trace = "ab" * 16
    spans = [
        Span("web", "GET /", trace, "0000000000000001", T0 * S, 10 * MS),
        Span("web", "GET /late", trace, "0000000000000002", T0 * S + 2 * TRACE_SLACK_NS, MS),
    ]
    await store.insert("otel_traces", trace_columns(spans))
    repository = TraceRepository(store)
    hits, _ = await repository.search(TraceQuery(T0 * S, T0 * S + MS))

    assert [(h.span_count, h.duration_ns) for h in hits] == [(1, 10 * MS)]


async def test_duration_search_reads_summaries_in_growing_chunks(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(store)
    repository = TraceRepository(store)
    sizes: list[int] = []
    summaries = repository._summaries

    async def counting(
        matches: dict[str, int], window: tuple[int, int] | None = None
    ) -> list[TraceSummary]:
        sizes.append(len(matches))
        return await summaries(matches, window)

    monkeypatch.setattr(repository, "_summaries", counting)
    hits, cursor = await repository.search(TraceQuery(*WINDOW, min_trace_duration_ns=0, limit=3))

    assert len(hits) == 3 and cursor is not None
    assert sizes == [4]  # the first chunk (limit + 1) already fills the page
