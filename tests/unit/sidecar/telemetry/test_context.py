"""Trace context parsing and formatting: W3C traceparent edge cases and B3 input."""

from __future__ import annotations

import os

import pytest

from sidecar.telemetry.context import (
    IdSource,
    TraceContext,
    extract,
    format_traceparent,
    parse_b3_single,
    parse_traceparent,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_valid_traceparent_round_trips() -> None:
    ctx = parse_traceparent(VALID, "rojo=00f067aa0ba902b7")
    assert ctx is not None
    assert ctx.trace_id.hex() == TRACE and ctx.span_id.hex() == SPAN
    assert ctx.sampled and ctx.tracestate == "rojo=00f067aa0ba902b7"
    assert format_traceparent(ctx.trace_id, ctx.span_id, ctx.flags) == VALID


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper-case hex is not allowed
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}-{SPAN}-01",  # short trace id
        f"00-{TRACE}-{SPAN}-1",  # one-digit flags
        f"00-{TRACE}-{SPAN}-0g",  # non-hex flags
        f"0-{TRACE}-{SPAN}-01",
        "",
        "garbage",
    ],
)
def test_invalid_traceparent_is_rejected(value: str) -> None:
    assert parse_traceparent(value) is None


def test_higher_version_parses_first_four_fields() -> None:
    ctx = parse_traceparent(f"01-{TRACE}-{SPAN}-01-what-ever")
    assert ctx is not None and ctx.trace_id.hex() == TRACE


def test_flags_are_kept_unchanged_and_only_bit_zero_means_sampled() -> None:
    ctx = parse_traceparent(f"00-{TRACE}-{SPAN}-02")
    assert ctx is not None
    assert ctx.flags == 0x02 and not ctx.sampled
    assert format_traceparent(ctx.trace_id, ctx.span_id, ctx.flags).endswith("-02")


def test_extract_prefers_traceparent_and_joins_tracestate_fields() -> None:
    headers = (
        ("b3", f"{'a' * 32}-{'b' * 16}-1"),
        ("traceparent", VALID),
        ("tracestate", "a=1"),
        ("tracestate", "b=2"),
    )
    ctx = extract(headers)
    assert ctx is not None and ctx.trace_id.hex() == TRACE
    assert ctx.tracestate == "a=1,b=2"
    assert not ctx.b3


def test_invalid_traceparent_restarts_the_trace_without_falling_back_to_b3() -> None:
    headers = (("traceparent", "00-bad"), ("b3", f"{'a' * 32}-{'b' * 16}-1"))
    assert extract(headers) is None


def test_duplicate_traceparent_is_invalid() -> None:
    assert extract((("traceparent", VALID), ("traceparent", VALID))) is None


def test_b3_single_with_sampling_and_parent() -> None:
    ctx = parse_b3_single(f"{'a' * 32}-{'b' * 16}-0-{'c' * 16}")
    assert ctx is not None and ctx.b3
    assert ctx.trace_id == bytes.fromhex("a" * 32) and ctx.flags == 0


def test_b3_single_64_bit_trace_id_is_left_padded() -> None:
    ctx = parse_b3_single(f"{'a' * 16}-{'b' * 16}-d")
    assert ctx is not None
    assert ctx.trace_id.hex() == "0" * 16 + "a" * 16 and ctx.sampled


@pytest.mark.parametrize(
    "value", ["0", "", f"{'a' * 32}", f"{'a' * 32}-{'b' * 16}-x", f"{'a' * 32}-{'0' * 16}-1"]
)
def test_b3_single_rejects_deny_only_and_junk(value: str) -> None:
    assert parse_b3_single(value) is None


def test_b3_multi_headers_first_value_wins_and_deferred_means_sampled() -> None:
    headers = (
        ("x-b3-traceid", "a" * 32),
        ("x-b3-spanid", "b" * 16),
        ("x-b3-traceid", "c" * 32),
    )
    ctx = extract(headers)
    assert ctx is not None and ctx.b3
    assert ctx.trace_id.hex() == "a" * 32 and ctx.sampled


def test_b3_multi_not_sampled_and_debug() -> None:
    denied = extract((("x-b3-traceid", "a" * 32), ("x-b3-spanid", "b" * 16), ("x-b3-sampled", "0")))
    assert denied is not None and not denied.sampled
    debug = extract((("x-b3-traceid", "a" * 32), ("x-b3-spanid", "b" * 16), ("x-b3-flags", "1")))
    assert debug is not None and debug.sampled


def test_b3_single_header_takes_precedence_over_multi() -> None:
    headers = (
        ("x-b3-traceid", "c" * 32),
        ("x-b3-spanid", "d" * 16),
        ("b3", f"{'a' * 32}-{'b' * 16}"),
    )
    ctx = extract(headers)
    assert ctx is not None and ctx.trace_id.hex() == "a" * 32


def test_trace_context_rejects_bad_ids() -> None:
    with pytest.raises(ValueError):
        TraceContext(bytes(16), b"\x01" * 8)
    with pytest.raises(ValueError):
        TraceContext(b"\x01" * 16, b"\x01" * 7)


def test_id_source_gives_distinct_nonzero_ids() -> None:
    ids = IdSource(seed=7)
    traces = {ids.trace_id() for _ in range(1000)}
    spans = {ids.span_id() for _ in range(1000)}
    assert len(traces) == 1000 and len(spans) == 1000
    assert all(len(t) == 16 for t in traces) and all(len(s) == 8 for s in spans)


def test_format_traceparent_flags_and_id_lengths() -> None:
    trace_id, span_id = bytes(range(1, 17)), bytes(range(17, 25))
    for flags in (0, 1, 2, 15, 16, 255, 256, 4096):
        assert format_traceparent(trace_id, span_id, flags) == (
            f"00-{trace_id.hex()}-{span_id.hex()}-{flags:02x}"
        )
    assert format_traceparent(b"\xab" * 4, b"\xcd", 1) == "00-abababab-cd-01"


def test_id_source_skips_all_zero_ids_across_buffer_refills() -> None:
    ids = IdSource(seed=3)
    draws: list[int] = []

    def fill(count: int) -> bytes:
        # each 512-byte buffer: a zero span id, a span id of ones, a zero trace id, then 0x02s
        draws.append(count)
        return bytes(8) + b"\x01" * 8 + bytes(16) + b"\x02" * 480

    ids._fill = fill
    assert ids.span_id() == b"\x01" * 8  # the zero id before it is skipped
    assert ids.trace_id() == b"\x02" * 16  # likewise
    assert draws == [512]
    for _ in range(29):  # the rest of the buffer: 29 more trace ids of 0x02
        assert ids.trace_id() == b"\x02" * 16
    assert ids.span_id() == b"\x01" * 8  # a refill: zero skipped again
    assert draws == [512, 512]


def test_id_source_without_a_seed_reads_the_os_random_source() -> None:
    ids = IdSource()
    assert ids._fill is os.urandom
    traces = {ids.trace_id() for _ in range(100)}
    assert len(traces) == 100 and all(len(t) == 16 and any(t) for t in traces)
