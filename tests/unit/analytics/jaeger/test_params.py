from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from analytics.jaeger.params import parse_rfc3339, parse_time_us, tag_query, v1_search, v3_search
from analytics.traces.query import AttributeFilter, InvalidQuery

NOW_NS = 1_780_000_000 * 10**9


def test_v1_times_are_microseconds_and_small_values_milliseconds() -> None:
    assert parse_time_us("start", "1780000000000000") == NOW_NS  # µs
    assert parse_time_us("start", "1780000000000") == NOW_NS  # ms (Grafana trace by id)


def test_rfc3339_keeps_nanoseconds_and_offsets() -> None:
    assert parse_rfc3339("t", "2026-05-28T20:26:40.000000001Z") == NOW_NS + 1
    assert parse_rfc3339("t", "2026-05-28T22:26:40+02:00") == NOW_NS
    with pytest.raises(InvalidQuery):
        parse_rfc3339("t", "2026-05-28")


def test_conventional_tags_become_status_and_kind() -> None:
    attrs, status, kind = tag_query({"error": "true", "span.kind": "client", "http.route": "/x"})
    assert status == "Error" and kind == "Client"
    assert attrs == (AttributeFilter("http.route", "=", "/x", resource=True),)
    assert tag_query({"otel.status_code": "OK"})[1] == "Ok"


def test_v1_search_defaults() -> None:
    query, ids = v1_search(QueryParams("service=web"), NOW_NS)
    assert ids == () and query is not None
    assert query.end_ns == NOW_NS
    assert query.start_ns == NOW_NS - 48 * 3600 * 10**9
    assert query.limit == 100


def test_v1_search_tags_json_and_pairs_merge() -> None:
    params = QueryParams('service=web&tags={"a":"1","ok":true}&tag=b:2&limit=5000')
    query, _ = v1_search(params, NOW_NS)
    assert query is not None
    assert {(f.key, f.value) for f in query.attributes} == {("a", "1"), ("ok", "true"), ("b", "2")}
    assert query.limit == 1000
    deep = "[" * 100_000 + "]" * 100_000  # (a RecursionError: 500 from the Jaeger API)
    with pytest.raises(InvalidQuery, match="nested too deeply"):
        v1_search(QueryParams({"service": "web", "tags": deep}), NOW_NS)


def test_v1_search_trace_ids_skip_the_search() -> None:
    query, ids = v1_search(QueryParams("traceID=abc&traceID=DEF"), NOW_NS)
    assert query is None
    assert ids == ["0" * 29 + "abc", "0" * 29 + "def"]


def test_v3_search_needs_the_time_range_and_parses_durations() -> None:
    with pytest.raises(InvalidQuery):
        v3_search(QueryParams("query.service_name=web"))
    query = v3_search(
        QueryParams(
            "query.service_name=web&query.start_time_min=2026-05-28T20:00:00Z"
            "&query.start_time_max=2026-05-28T21:00:00Z&query.duration_min=1ms&query.num_traces=7"
        )
    )
    assert query.service == "web" and query.min_span_duration_ns == 1_000_000
    assert query.limit == 7
    with pytest.raises(InvalidQuery):
        v3_search(
            QueryParams(
                "query.startTimeMin=2026-05-28T21:00:00Z&query.startTimeMax=2026-05-28T20:00:00Z"
            )
        )
