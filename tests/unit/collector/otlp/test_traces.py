from __future__ import annotations

from collector.otlp.columns import Signal
from collector.otlp.traces import TRACES_TABLE, decode_traces
from tests.unit.collector.helpers import kv, trace_request


def test_span_fields_map_to_exporter_columns() -> None:
    request = trace_request(1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.parent_span_id = bytes.fromhex("00f067aa0ba902b7")
    span.kind = 3
    span.status.code = 2
    span.status.message = "boom"
    event = span.events.add()
    event.name = "exception"
    event.time_unix_nano = span.start_time_unix_nano + 5
    event.attributes.append(kv("exception.type", "ValueError"))
    link = span.links.add()
    link.trace_id = bytes(range(16))
    link.span_id = bytes(range(8))

    batch = decode_traces(request)

    assert batch.signal is Signal.TRACES
    assert (batch.accepted, batch.rejected) == (1, 0)
    cols = batch.tables[TRACES_TABLE]
    assert cols["TraceId"] == [span.trace_id.hex()]
    assert cols["SpanId"] == [span.span_id.hex()]
    assert cols["ParentSpanId"] == ["00f067aa0ba902b7"]
    assert cols["SpanKind"] == ["Client"]
    assert cols["StatusCode"] == ["Error"]
    assert cols["StatusMessage"] == ["boom"]
    assert cols["ServiceName"] == ["checkout"]
    assert cols["ResourceAttributes"] == [{"host.name": "h1", "service.name": "checkout"}]
    assert cols["SpanAttributes"] == [{"http.response.status_code": "200", "i": "0"}]
    assert cols["ScopeName"] == ["test"] and cols["ScopeVersion"] == ["1.0"]
    assert cols["Timestamp"] == [span.start_time_unix_nano]
    assert cols["Duration"] == [1_000_000]
    assert cols["Events.Name"] == [["exception"]]
    assert cols["Events.Timestamp"] == [[span.start_time_unix_nano + 5]]
    assert cols["Events.Attributes"] == [[{"exception.type": "ValueError"}]]
    assert cols["Links.TraceId"] == [[bytes(range(16)).hex()]]
    assert cols["Links.SpanId"] == [[bytes(range(8)).hex()]]
    assert len({len(values) for values in cols.values()}) == 1


def test_spans_with_wrong_length_ids_are_rejected_and_the_rest_kept() -> None:
    request = trace_request(4)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].trace_id = b"\x01" * 8
    spans[2].parent_span_id = b"\x02" * 3

    batch = decode_traces(request)

    assert (batch.accepted, batch.rejected) == (2, 2)
    assert "trace_id must be 16 bytes, got 8" in batch.error_message
    assert batch.error_message.startswith("2 span(s) rejected")
    assert batch.tables[TRACES_TABLE]["SpanId"] == [spans[0].span_id.hex(), spans[3].span_id.hex()]


def test_end_before_start_gives_zero_duration_and_unknown_enums_fall_back() -> None:
    request = trace_request(1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.end_time_unix_nano = span.start_time_unix_nano - 10
    span.kind = 9

    cols = decode_traces(request).tables[TRACES_TABLE]

    assert cols["Duration"] == [0]
    assert cols["SpanKind"] == ["Unspecified"]


def test_a_request_of_only_invalid_spans_has_no_tables() -> None:
    request = trace_request(1)
    request.resource_spans[0].scope_spans[0].spans[0].span_id = b""
    batch = decode_traces(request)
    assert batch.tables == {}
    assert batch.rejected == 1


def test_spans_with_times_out_of_the_stores_range_are_rejected_and_the_rest_kept() -> None:
    # DateTime64(9) ends at 2262-04-11 (Int64 ns): one such span made the store refuse the
    # whole insert batch, losing the spans of every request in it
    request = trace_request(3)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].start_time_unix_nano = 2**64 - 1
    spans[0].end_time_unix_nano = 2**64 - 1
    spans[1].events.add(name="late", time_unix_nano=2**63)
    spans[2].start_time_unix_nano = 2**63 - 1  # the last representable nanosecond: kept

    batch = decode_traces(request)

    assert (batch.accepted, batch.rejected) == (1, 2)
    assert "a time at or after 2262-04-11" in batch.error_message
    assert batch.tables[TRACES_TABLE]["SpanId"] == [spans[2].span_id.hex()]
