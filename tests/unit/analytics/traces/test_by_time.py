"""First pages of searches without a service come from meshlens_spans_by_time (schema v6)."""

from __future__ import annotations

from typing import Any

import pytest

from analytics.traces import repository as repository_module
from analytics.traces.query import AttributeFilter, TraceQuery
from analytics.traces.repository import TraceRepository
from collector.store import Store
from tests.conftest import Span, trace_columns

T0 = 1_780_000_000
S = 1_000_000_000
MS = 1_000_000
WINDOW = (T0 * S, (T0 + 600) * S)


def _tid(i: int) -> str:
    return f"{i + 1:032x}"


def _spans() -> list[Span]:
    """Traces 0..39, one per 10 s, each: web GET (route=/a or /b), then api SELECT; traces 40
    and 41 start at the same ns as trace 39, one matching route=/a and one not; traces 42..44
    start at the same ns as each other; trace 45 is 30 newer spans."""
    spans: list[Span] = []
    for i in range(40):
        start = (T0 + 10 * i) * S
        route = "/a" if i % 3 else "/b"
        spans += [
            Span("web", "GET", _tid(i), f"{i:08x}00000001", start, 5 * MS, attributes={"r": route}),
            Span("api", "SELECT", _tid(i), f"{i:08x}00000002", start + MS, MS, kind="Client"),
        ]
    last = (T0 + 390) * S
    spans += [
        Span("web", "GET", _tid(40), "0000004000000001", last, MS, attributes={"r": "/a"}),
        Span("web", "GET", _tid(41), "0000004100000001", last, MS, attributes={"r": "/zzz"}),
    ]
    spans += [
        Span("web", "GET", _tid(i), f"{i:08x}00000001", (T0 + 395) * S, MS, attributes={"r": "/a"})
        for i in (42, 43, 44)
    ]
    spans += [
        Span("batch", "LOOP", _tid(45), f"{i:016x}", (T0 + 500) * S + i * MS, MS) for i in range(30)
    ]
    return spans


QUERIES = [
    TraceQuery(*WINDOW, limit=3),
    TraceQuery(*WINDOW, limit=5, attributes=(AttributeFilter("r", "=~", "^/a"),)),
    TraceQuery(*WINDOW, limit=4, attributes=(AttributeFilter("r", "!=", "/a"),)),
    TraceQuery(*WINDOW, limit=2, operation="SELECT"),
    TraceQuery(*WINDOW, limit=20, status="Error"),  # no hit at all
    TraceQuery((T0 + 100) * S, (T0 + 395) * S, limit=30),  # fewer hits than asked
]


@pytest.fixture
async def filled(store: Store) -> Store:
    await store.insert("otel_traces", trace_columns(_spans()))
    return store


@pytest.mark.parametrize("slices", [(2, 2000, 3), (1, 4, 200)], ids=["default", "small_slices"])
async def test_first_pages_without_a_service_equal_grouping_otel_traces_without_grouping(
    filled: Store, monkeypatch: pytest.MonkeyPatch, slices: tuple[int, int, int]
) -> None:
    # small_slices: slices of 4 rows, so slice boundaries fall on tied start times too.
    for name, value in zip(
        ("PREFIX_FIRST", "PREFIX_MAX_ROWS", "PREFIX_ROUNDS"), slices, strict=True
    ):
        monkeypatch.setattr(repository_module, name, value)
    repository = TraceRepository(filled)
    grouping = repository_module.matches_sql

    def refuse(query: TraceQuery, depth: int | None = None) -> tuple[str, dict[str, Any]]:
        raise AssertionError("grouped otel_traces")

    monkeypatch.setattr(repository_module, "matches_sql", refuse)
    with_copy = [await repository.search(q) for q in QUERIES]
    monkeypatch.setattr(repository_module, "matches_sql", grouping)
    await filled.command("DROP TABLE meshlens_spans_by_time_mv")
    await filled.command("DROP TABLE meshlens_spans_by_time")
    without = [await repository.search(q) for q in QUERIES]

    assert with_copy == without
    assert [len(page) for page, _ in with_copy] == [3, 5, 4, 2, 0, 30]
    regex = [h.trace_id for h in with_copy[1][0]]
    assert regex == [_tid(44), _tid(43), _tid(42), _tid(40), _tid(38)]  # ties


# Pages these find from otel_traces' newest matching spans (a service, or a filter the time-ordered
# copy lacks), in one slice.
OTEL_TRACES_QUERIES = [
    TraceQuery(*WINDOW, service="web", limit=3),
    TraceQuery(*WINDOW, service="web", limit=4, attributes=(AttributeFilter("r", "=", "/a"),)),
    TraceQuery(*WINDOW, service="api", operation="SELECT", limit=5),
    TraceQuery(*WINDOW, min_span_duration_ns=2 * MS, limit=4),
    TraceQuery(
        *WINDOW, limit=3, attributes=(AttributeFilter("service.name", "=", "api", resource=True),)
    ),
    TraceQuery(*WINDOW, service="batch", limit=2),  # 30 spans of one trace: too few, grouped
]


async def test_pages_from_otel_traces_newest_spans_equal_grouping(
    filled: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = repository_module._newest_source
    assert source(OTEL_TRACES_QUERIES[0], 4) == ("otel_traces", 1)
    assert source(OTEL_TRACES_QUERIES[4], 4) == ("otel_traces", 1)
    assert source(QUERIES[0], 4) == ("meshlens_spans_by_time", repository_module.PREFIX_ROUNDS)
    repository = TraceRepository(filled)
    grouping = repository_module.matches_sql
    grouped_services: list[str | None] = []

    def counting(query: TraceQuery, depth: int | None = None) -> tuple[str, dict[str, Any]]:
        grouped_services.append(query.service)
        return grouping(query, depth)

    monkeypatch.setattr(repository_module, "matches_sql", counting)
    newest = [await repository.search(q) for q in OTEL_TRACES_QUERIES]
    monkeypatch.setattr(repository_module, "PREFIX_MAX_DEPTH", 0)  # always group
    grouped = [await repository.search(q) for q in OTEL_TRACES_QUERIES]

    assert newest == grouped
    assert [len(page) for page, _ in newest] == [3, 4, 5, 4, 3, 1]
    assert grouped_services[:1] == ["batch"]  # the only first-pass query that grouped
    assert len(grouped_services) == 1 + len(OTEL_TRACES_QUERIES)


async def test_too_few_traces_after_the_rounds_falls_back_to_grouping(
    filled: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository_module, "PREFIX_ROUNDS", 1)
    repository = TraceRepository(filled)
    query = TraceQuery(*WINDOW, limit=10)

    # The newest 22 spans all belong to trace 45: too few traces after one round.
    assert await repository._matches_by_time(query, 11) is None
    monkeypatch.setattr(repository_module, "PREFIX_ROUNDS", 0)
    hits, _ = await repository.search(query)
    assert len(hits) == 10
