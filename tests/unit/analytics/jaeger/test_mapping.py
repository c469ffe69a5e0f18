from __future__ import annotations

import pytest

from analytics.jaeger.mapping import jaeger_kind, jaeger_trace, jaeger_trace_id, typed_value
from analytics.jaeger.otlp_json import traces_data
from analytics.traces.query import SpanRecord


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", ("bool", True)),
        ("false", ("bool", False)),
        ("200", ("int64", 200)),
        ("-3", ("int64", -3)),
        ("9007199254740991", ("int64", 9007199254740991)),
        ("9007199254740992", ("int64", "9007199254740992")),
        ("99999999999999999999", ("string", "99999999999999999999")),
        ("0.25", ("float64", 0.25)),
        ("1e3", ("float64", 1000.0)),
        ("007", ("string", "007")),
        ("GET", ("string", "GET")),
        ("", ("string", "")),
        ("nan", ("string", "nan")),
    ],
)
def test_attribute_text_recovers_its_type(text: str, expected: tuple[str, object]) -> None:
    assert typed_value(text) == expected


def test_kinds_and_ids() -> None:
    assert jaeger_kind("Server") == "server"
    assert jaeger_kind("SPAN_KIND_CLIENT") == "client"
    assert jaeger_kind("Unspecified") == ""
    assert jaeger_trace_id("0" * 16 + "1" * 16) == "1" * 16
    assert jaeger_trace_id("1" * 32) == "1" * 32


def _span(service: str, span_id: str, resource: dict[str, str]) -> SpanRecord:
    return SpanRecord(
        trace_id="1" * 32,
        span_id=span_id,
        parent_span_id="",
        trace_state="",
        name="op",
        kind="SPAN_KIND_SERVER",
        service=service,
        resource=resource,
        scope_name="",
        scope_version="",
        attributes={},
        start_ns=1_999,
        duration_ns=2_999,
        status_code="STATUS_CODE_OK",
        status_message="",
    )


def test_processes_are_one_per_service_and_resource() -> None:
    spans = [
        _span("a", "1", {"service.name": "a", "pod": "x"}),
        _span("a", "2", {"service.name": "a", "pod": "y"}),
        _span("a", "3", {"service.name": "a", "pod": "x"}),
    ]
    trace = jaeger_trace(spans)
    assert [s["processID"] for s in trace["spans"]] == ["p1", "p2", "p1"]
    assert trace["spans"][0]["startTime"] == 1 and trace["spans"][0]["duration"] == 2
    assert {"key": "otel.status_code", "type": "string", "value": "OK"} in trace["spans"][0]["tags"]
    assert trace["processes"]["p2"] == {
        "serviceName": "a",
        "tags": [{"key": "pod", "type": "string", "value": "y"}],
    }


def test_otlp_json_groups_by_resource_and_uses_enum_numbers() -> None:
    data = traces_data(
        [_span("a", "1", {"service.name": "a"}), _span("b", "2", {"service.name": "b"})]
    )
    assert len(data["resourceSpans"]) == 2
    span = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["kind"] == 2 and span["status"] == {"code": 1}
    assert span["startTimeUnixNano"] == "1999" and span["endTimeUnixNano"] == "4998"
