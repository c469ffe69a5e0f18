"""otel_traces spans -> OTLP JSON `TracesData` as Jaeger's api_v3 returns it.

Ids are hex, kind and status code are the proto enum numbers, 64-bit times are strings (proto3
JSON); spans are grouped by resource, then by instrumentation scope, in first-seen order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from analytics.jaeger.mapping import typed_value
from analytics.traces.query import SpanRecord

__all__ = ["KIND_NUMBERS", "otlp_attributes", "traces_data"]

KIND_NUMBERS = {
    "unspecified": 0,
    "internal": 1,
    "server": 2,
    "client": 3,
    "producer": 4,
    "consumer": 5,
}
_STATUS_NUMBERS = {"unset": 0, "ok": 1, "error": 2}


def _any_value(text: str) -> dict[str, Any]:
    kind, value = typed_value(text)
    if kind == "bool":
        return {"boolValue": value}
    if kind == "int64":
        return {"intValue": str(value)}
    if kind == "float64":
        return {"doubleValue": value}
    return {"stringValue": text}


def otlp_attributes(attributes: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _any_value(text)} for key, text in attributes.items()]


def _kind(kind: str) -> int:
    return KIND_NUMBERS.get(kind.removeprefix("SPAN_KIND_").lower(), 0)


def _span(span: SpanRecord) -> dict[str, Any]:
    status: dict[str, Any] = {}
    code = _STATUS_NUMBERS.get(span.status_code.removeprefix("STATUS_CODE_").lower(), 0)
    if code:
        status["code"] = code
    if span.status_message:
        status["message"] = span.status_message
    out: dict[str, Any] = {"traceId": span.trace_id, "spanId": span.span_id}
    if span.trace_state:
        out["traceState"] = span.trace_state
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id
    out |= {
        "name": span.name,
        "kind": _kind(span.kind),
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.start_ns + span.duration_ns),
        "attributes": otlp_attributes(span.attributes),
        "events": [
            {
                "timeUnixNano": str(event.time_ns),
                "name": event.name,
                "attributes": otlp_attributes(event.attributes),
            }
            for event in span.events
        ],
        "links": [
            {"traceId": link.trace_id, "spanId": link.span_id}
            | ({"traceState": link.trace_state} if link.trace_state else {})
            | {"attributes": otlp_attributes(link.attributes)}
            for link in span.links
        ],
        "status": status,
    }
    return out


def traces_data(spans: Iterable[SpanRecord]) -> dict[str, Any]:
    """`{"resourceSpans": [...]}` for these spans."""
    resources: dict[tuple[tuple[str, str], ...], dict[tuple[str, str], list[dict[str, Any]]]] = {}
    for span in spans:
        scopes = resources.setdefault(tuple(span.resource.items()), {})
        scopes.setdefault((span.scope_name, span.scope_version), []).append(_span(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": otlp_attributes(dict(resource))},
                "scopeSpans": [
                    {"scope": {"name": name, "version": version}, "spans": grouped}
                    for (name, version), grouped in scopes.items()
                ],
            }
            for resource, scopes in resources.items()
        ]
    }
