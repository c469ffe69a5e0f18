from __future__ import annotations

import pytest

from analytics.traces.query import (
    AttributeFilter,
    Cursor,
    InvalidQuery,
    TraceQuery,
    normalize_trace_id,
    parse_attribute_filter,
    parse_go_duration,
)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("100ms", 100_000_000),
        ("1.5s", 1_500_000_000),
        ("1h2m", 3_720_000_000_000),
        ("250us", 250_000),
        ("250µs", 250_000),
        ("7ns", 7),
        (".5s", 500_000_000),
    ],
)
def test_go_durations_parse_to_ns(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize("text", ["", "5", "-1s", "1d", "1.s.", "fast", "1 s"])
def test_bad_go_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidQuery):
        parse_go_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("k=v", AttributeFilter("k", "=", "v")),
        ("k!=v", AttributeFilter("k", "!=", "v")),
        ("k=~^a.*", AttributeFilter("k", "=~", "^a.*")),
        ("k!~b", AttributeFilter("k", "!~", "b")),
        ("http.url=a=b", AttributeFilter("http.url", "=", "a=b")),
        ("k=", AttributeFilter("k", "=", "")),
    ],
)
def test_attribute_filters_split_at_the_first_operator(
    text: str, expected: AttributeFilter
) -> None:
    assert parse_attribute_filter(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=v", "!=v"])
def test_attribute_filters_need_a_key_and_operator(text: str) -> None:
    with pytest.raises(InvalidQuery):
        parse_attribute_filter(text)


def test_cursor_round_trips_and_rejects_tampering() -> None:
    cursor = Cursor(1_780_000_000_123_456_789, "0af7651916cd43dd8448eb211c80319c")
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "!!!", Cursor(1, "zz").encode(), "MTIz"):
        with pytest.raises(InvalidQuery):
            Cursor.decode(bad)


def test_trace_ids_are_normalized_to_32_lower_hex() -> None:
    assert normalize_trace_id("ABCDEF") == "0" * 26 + "abcdef"
    assert (
        normalize_trace_id("0af7651916cd43dd8448eb211c80319c") == "0af7651916cd43dd8448eb211c80319c"
    )
    for bad in ("", "xyz", "1" * 33):
        with pytest.raises(InvalidQuery):
            normalize_trace_id(bad)


def test_trace_query_lists_every_problem() -> None:
    with pytest.raises(InvalidQuery) as info:
        TraceQuery(
            start_ns=10,
            end_ns=5,
            limit=0,
            status="Bad",
            min_trace_duration_ns=5,
            max_trace_duration_ns=1,
        )
    message = str(info.value)
    for fragment in ("end must be after start", "limit", "status", "max trace duration"):
        assert fragment in message
