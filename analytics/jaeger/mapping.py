"""otel_traces spans -> Jaeger UI JSON (the v1 `/api/traces` model) and the shared value typing.

Units: startTime, duration and log timestamps in µs. The store keeps every attribute value as text
(the exporter's AsString), so types are recovered from the text: `true`/`false` -> bool, integers
-> int64 (beyond ±(2^53-1) as a JSON string, as Jaeger does), decimals -> float64, else string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from analytics.traces.query import SpanRecord

__all__ = [
    "jaeger_kind",
    "jaeger_trace",
    "jaeger_trace_id",
    "key_values",
    "typed_value",
]

_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+([eE][-+]?[0-9]+)?|-?[0-9]+[eE][-+]?[0-9]+")
_MAX_SAFE = 2**53 - 1
_INT64 = 2**63


def typed_value(text: str) -> tuple[str, Any]:
    """(Jaeger type, JSON value) recovered from an attribute's text form."""
    if text in ("true", "false"):
        return "bool", text == "true"
    if _INT.fullmatch(text):
        number = int(text)
        if -_INT64 <= number < _INT64:
            return "int64", number if abs(number) <= _MAX_SAFE else text
        return "string", text
    if _FLOAT.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return "float64", value
    return "string", text


def key_values(attributes: Mapping[str, str], *, skip: Iterable[str] = ()) -> list[dict[str, Any]]:
    skipped = set(skip)
    out = []
    for key, text in attributes.items():
        if key in skipped:
            continue
        kind, value = typed_value(text)
        out.append({"key": key, "type": kind, "value": value})
    return out


def _kv(key: str, value: Any, kind: str = "string") -> dict[str, Any]:
    return {"key": key, "type": kind, "value": value}


def jaeger_kind(kind: str) -> str:
    """`Server` / `SPAN_KIND_SERVER` -> `server`; unspecified -> ``."""
    name = kind.removeprefix("SPAN_KIND_").lower()
    return "" if name in ("unspecified", "") else name


def _status(code: str) -> str:
    return code.removeprefix("STATUS_CODE_").upper()


def jaeger_trace_id(trace_id: str) -> str:
    """64-bit ids (upper half zero) as 16 hex digits, 128-bit ones as 32 (jaeger-idl ids.go)."""
    if len(trace_id) == 32 and trace_id.startswith("0" * 16):
        return trace_id[16:]
    return trace_id


def _tags(span: SpanRecord) -> list[dict[str, Any]]:
    tags = key_values(span.attributes)
    kind = jaeger_kind(span.kind)
    if kind:
        tags.append(_kv("span.kind", kind))
    status = _status(span.status_code)
    if status in ("OK", "ERROR"):
        tags.append(_kv("otel.status_code", status))
    if status == "ERROR":
        tags.append(_kv("error", True, "bool"))
    if span.status_message:
        tags.append(_kv("otel.status_description", span.status_message))
    if span.scope_name:
        tags.append(_kv("otel.scope.name", span.scope_name))
    if span.scope_version:
        tags.append(_kv("otel.scope.version", span.scope_version))
    if span.trace_state:
        tags.append(_kv("w3c.tracestate", span.trace_state))
    return tags


def _span(span: SpanRecord, process_id: str) -> dict[str, Any]:
    trace_id = jaeger_trace_id(span.trace_id)
    references = []
    if span.parent_span_id:
        references.append(
            {"refType": "CHILD_OF", "traceID": trace_id, "spanID": span.parent_span_id}
        )
    references += [
        {
            "refType": "FOLLOWS_FROM",
            "traceID": jaeger_trace_id(link.trace_id),
            "spanID": link.span_id,
        }
        for link in span.links
    ]
    return {
        "traceID": trace_id,
        "spanID": span.span_id,
        "operationName": span.name,
        "references": references,
        "startTime": span.start_ns // 1000,
        "duration": span.duration_ns // 1000,
        "tags": _tags(span),
        "logs": [
            {
                "timestamp": event.time_ns // 1000,
                "fields": [_kv("event", event.name), *key_values(event.attributes)],
            }
            for event in span.events
        ],
        "processID": process_id,
        "warnings": None,
    }


def jaeger_trace(spans: Sequence[SpanRecord]) -> dict[str, Any]:
    """One Jaeger Trace: spans, processes `p1`.. (one per service + resource), warnings null."""
    processes: dict[str, dict[str, Any]] = {}
    ids: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
    out = []
    for span in spans:
        key = (span.service, tuple(sorted(span.resource.items())))
        process_id = ids.get(key)
        if process_id is None:
            process_id = ids[key] = f"p{len(ids) + 1}"
            processes[process_id] = {
                "serviceName": span.service,
                "tags": key_values(span.resource, skip=("service.name",)),
            }
        out.append(_span(span, process_id))
    return {
        "traceID": jaeger_trace_id(spans[0].trace_id) if spans else "",
        "spans": out,
        "processes": processes,
        "warnings": None,
    }
