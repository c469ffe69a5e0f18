"""ExportTraceServiceRequest -> `otel_traces` columns (the ClickHouse exporter's layout)."""

from __future__ import annotations

from typing import Any

from collector.otlp.anyvalue import attrs_to_map
from collector.otlp.columns import Columns, DecodedBatch, Signal
from collector.schema.otel_traces import COLUMNS as _COLUMNS

__all__ = ["SPAN_KINDS", "STATUS_CODES", "TRACES_TABLE", "decode_traces"]

TRACES_TABLE = "otel_traces"
# pdata's Kind().String() / Code().String(): what the current exporter writes (INTERFACES §9.2).
SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")


# DateTime64(9) holds nanoseconds as Int64: a time from 2262-04-11 on is out of its range, and
# one such value made the store refuse the whole insert batch (other requests' spans with it)
MAX_UNIX_NANO = 2**63


def _span_problem(span: Any) -> str | None:
    if span.start_time_unix_nano >= MAX_UNIX_NANO or any(
        e.time_unix_nano >= MAX_UNIX_NANO for e in span.events
    ):
        return f"span {span.name!r}: a time at or after 2262-04-11 (out of the store's range)"
    if len(span.trace_id) != 16:
        return f"span {span.name!r}: trace_id must be 16 bytes, got {len(span.trace_id)}"
    if len(span.span_id) != 8:
        return f"span {span.name!r}: span_id must be 8 bytes, got {len(span.span_id)}"
    if len(span.parent_span_id) not in (0, 8):
        return (
            f"span {span.name!r}: parent_span_id must be empty or 8 bytes, "
            f"got {len(span.parent_span_id)}"
        )
    return None


def decode_traces(request: Any) -> DecodedBatch:
    """Build `otel_traces` columns from a parsed request; invalid spans are counted, not kept.

    One long loop on purpose: it runs per span on the ingest hot path, where helper calls and
    attribute lookups are a measurable share of the CPU (bench/collector_ingest.py).
    """
    cols: Columns = {name: [] for name in _COLUMNS}
    ts, trace_ids, span_ids, parents = (
        cols["Timestamp"],
        cols["TraceId"],
        cols["SpanId"],
        cols["ParentSpanId"],
    )
    states, names, kinds, services = (
        cols["TraceState"],
        cols["SpanName"],
        cols["SpanKind"],
        cols["ServiceName"],
    )
    res_attrs, scope_names, scope_versions, span_attrs = (
        cols["ResourceAttributes"],
        cols["ScopeName"],
        cols["ScopeVersion"],
        cols["SpanAttributes"],
    )
    durations, codes, messages = cols["Duration"], cols["StatusCode"], cols["StatusMessage"]
    accepted = rejected = 0
    first_error = ""
    for resource_spans in request.resource_spans:
        resource = attrs_to_map(resource_spans.resource.attributes)
        service = resource.get("service.name", "")
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            scope_version = scope_spans.scope.version
            for span in scope_spans.spans:
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                start = span.start_time_unix_nano
                events = span.events
                if (
                    len(trace_id) != 16
                    or len(span_id) != 8
                    or len(parent) not in (0, 8)
                    or start >= MAX_UNIX_NANO
                    or (events and max(e.time_unix_nano for e in events) >= MAX_UNIX_NANO)
                ):
                    rejected += 1
                    if not first_error:
                        first_error = _span_problem(span) or "invalid span"
                    continue
                accepted += 1
                end = span.end_time_unix_nano
                ts.append(start)
                trace_ids.append(trace_id.hex())
                span_ids.append(span_id.hex())
                parents.append(parent.hex())
                states.append(span.trace_state)
                names.append(span.name)
                kind = span.kind
                kinds.append(SPAN_KINDS[kind] if 0 <= kind < 6 else "Unspecified")
                services.append(service)
                res_attrs.append(resource)
                scope_names.append(scope_name)
                scope_versions.append(scope_version)
                span_attrs.append(attrs_to_map(span.attributes))
                # A clock step can make end < start; Duration is UInt64, so clamp to 0.
                durations.append(end - start if end > start else 0)
                status = span.status
                code = status.code
                codes.append(STATUS_CODES[code] if 0 <= code < 3 else "Unset")
                messages.append(status.message)
                _append_events(cols, events)
                _append_links(cols, span.links)
    if rejected and first_error:
        first_error = f"{rejected} span(s) rejected; first: {first_error}"
    tables = {TRACES_TABLE: cols} if accepted else {}
    return DecodedBatch(Signal.TRACES, tables, accepted, rejected, first_error)


def _append_events(cols: Columns, events: Any) -> None:
    if not events:
        cols["Events.Timestamp"].append([])
        cols["Events.Name"].append([])
        cols["Events.Attributes"].append([])
        return
    cols["Events.Timestamp"].append([e.time_unix_nano for e in events])
    cols["Events.Name"].append([e.name for e in events])
    cols["Events.Attributes"].append([attrs_to_map(e.attributes) for e in events])


def _append_links(cols: Columns, links: Any) -> None:
    if not links:
        cols["Links.TraceId"].append([])
        cols["Links.SpanId"].append([])
        cols["Links.TraceState"].append([])
        cols["Links.Attributes"].append([])
        return
    cols["Links.TraceId"].append([link.trace_id.hex() for link in links])
    cols["Links.SpanId"].append([link.span_id.hex() for link in links])
    cols["Links.TraceState"].append([link.trace_state for link in links])
    cols["Links.Attributes"].append([attrs_to_map(link.attributes) for link in links])
