"""Response bodies of the trace REST API (/api/v1): times in ns since the epoch, durations in ns."""

from __future__ import annotations

from pydantic import BaseModel

from analytics.traces.query import SpanRecord, TraceSummary

__all__ = [
    "EventOut",
    "LinkOut",
    "OperationOut",
    "SearchOut",
    "ServicesOut",
    "SpanOut",
    "TraceOut",
    "TraceSummaryOut",
    "span_out",
    "summary_out",
]


class TraceSummaryOut(BaseModel):
    trace_id: str
    root_service: str
    root_name: str
    start_time_unix_nano: int
    duration_ns: int
    duration_ms: float
    span_count: int
    error_count: int
    services: list[str]


class SearchOut(BaseModel):
    traces: list[TraceSummaryOut]
    next_cursor: str | None = None


class EventOut(BaseModel):
    time_unix_nano: int
    name: str
    attributes: dict[str, str]


class LinkOut(BaseModel):
    trace_id: str
    span_id: str
    trace_state: str
    attributes: dict[str, str]


class SpanOut(BaseModel):
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    name: str
    kind: str
    service: str
    start_time_unix_nano: int
    duration_ns: int
    status_code: str
    status_message: str
    attributes: dict[str, str]
    resource_attributes: dict[str, str]
    scope_name: str
    scope_version: str
    events: list[EventOut]
    links: list[LinkOut]


class TraceOut(BaseModel):
    trace_id: str
    spans: list[SpanOut]


class ServicesOut(BaseModel):
    services: list[str]


class OperationOut(BaseModel):
    name: str
    span_kind: str


def summary_out(hit: TraceSummary) -> TraceSummaryOut:
    return TraceSummaryOut(
        trace_id=hit.trace_id,
        root_service=hit.root_service,
        root_name=hit.root_name,
        start_time_unix_nano=hit.start_ns,
        duration_ns=hit.duration_ns,
        duration_ms=hit.duration_ns / 1e6,
        span_count=hit.span_count,
        error_count=hit.error_count,
        services=list(hit.services),
    )


def span_out(span: SpanRecord) -> SpanOut:
    return SpanOut(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        trace_state=span.trace_state,
        name=span.name,
        kind=span.kind,
        service=span.service,
        start_time_unix_nano=span.start_ns,
        duration_ns=span.duration_ns,
        status_code=span.status_code,
        status_message=span.status_message,
        attributes=dict(span.attributes),
        resource_attributes=dict(span.resource),
        scope_name=span.scope_name,
        scope_version=span.scope_version,
        events=[
            EventOut(time_unix_nano=e.time_ns, name=e.name, attributes=dict(e.attributes))
            for e in span.events
        ],
        links=[
            LinkOut(
                trace_id=k.trace_id,
                span_id=k.span_id,
                trace_state=k.trace_state,
                attributes=dict(k.attributes),
            )
            for k in span.links
        ],
    )
