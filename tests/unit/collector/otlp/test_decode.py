from __future__ import annotations

import json

import pytest

from collector.otlp.columns import Signal
from collector.otlp.decode import decode_protobuf, decode_request
from collector.otlp.errors import InvalidRequest
from collector.otlp.traces import TRACES_TABLE
from tests.unit.collector.helpers import trace_request

_JSON_TRACE = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "s"},
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "EEE19B7EC3C1B174",
                            "parentSpanId": "",
                            "name": "GET /",
                            "kind": 2,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": 1544712661000000000,
                            "attributes": [
                                {"key": "n", "value": {"intValue": "3"}},
                                {"key": "ok", "value": {"boolValue": True}},
                            ],
                            "status": {"code": 2},
                            "unknownField": {"ignored": True},
                        }
                    ],
                }
            ],
        }
    ]
}


def test_json_with_hex_ids_and_string_int64s_decodes() -> None:
    batch, payload = decode_request(Signal.TRACES, json.dumps(_JSON_TRACE).encode(), is_json=True)
    cols = batch.tables[TRACES_TABLE]
    assert cols["TraceId"] == ["5b8efff798038103d269b633813fc60c"]
    assert cols["SpanId"] == ["eee19b7ec3c1b174"]
    assert cols["ParentSpanId"] == [""]
    assert cols["SpanKind"] == ["Server"] and cols["StatusCode"] == ["Error"]
    assert cols["Duration"] == [1_000_000_000]
    assert cols["SpanAttributes"] == [{"n": "3", "ok": "true"}]
    # The spooled form is canonical protobuf and decodes to the same rows.
    assert decode_protobuf(Signal.TRACES, payload).tables == batch.tables


def test_protobuf_passes_through_unchanged() -> None:
    body = trace_request(3).SerializeToString()
    batch, payload = decode_request(Signal.TRACES, body, is_json=False)
    assert payload is body
    assert batch.accepted == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "must be an object"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "not hex"),
        (b'{"resourceSpans": "nope"}', "invalid OTLP JSON"),
        # (these two escaped as OverflowError and SystemError: a 500 for a client's bad JSON)
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": 1e400}]}]}]}',  # an enum
            "invalid OTLP JSON",
        ),
        (b'{"resourceSpans": [{"\\ud800": 1}]}', "not valid Unicode"),
        # (RecursionError: a 500 and a logged traceback from the HTTP receiver)
        (b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
)
def test_bad_json_is_an_invalid_request_naming_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode_request(Signal.TRACES, body, is_json=True)


def test_truncated_protobuf_is_an_invalid_request() -> None:
    body = trace_request(2).SerializeToString()
    with pytest.raises(InvalidRequest, match="malformed protobuf"):
        decode_request(Signal.TRACES, body[: len(body) // 2], is_json=False)
