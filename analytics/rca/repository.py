"""Reading spans for root-cause ranking from otel_traces (bounded: a sample of whole traces),
marked failed where an error-level log record (otel_logs) names the span."""

from __future__ import annotations

from datetime import datetime

from analytics.rca.ranking import SpanRow, with_logged_errors
from collector.store import Store

__all__ = ["MAX_LOGGED_ERRORS", "MAX_SPANS", "load_spans", "logged_error_spans"]

MAX_SPANS = 200_000
MAX_LOGGED_ERRORS = 100_000

# Whole traces are kept or dropped together (hash of the trace id), so parent/child pairs and
# self times stay intact when a window holds more spans than we rank over.
_SPANS = """
SELECT TraceId AS trace_id, SpanId AS span_id, ParentSpanId AS parent_span_id,
       ServiceName AS service, SpanName AS name,
       toUnixTimestamp64Nano(Timestamp) AS start_ns, Duration AS duration_ns,
       StatusCode IN ('Error', 'STATUS_CODE_ERROR')
         OR toUInt16OrZero(SpanAttributes['http.response.status_code']) >= 500 AS error,
       if(SpanKind IN ('Client', 'SPAN_KIND_CLIENT'),
          if(SpanAttributes['meshlens.upstream'] != '', SpanAttributes['meshlens.upstream'],
             SpanAttributes['server.address']), '') AS peer
FROM otel_traces
WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
  AND cityHash64(TraceId) % {modulus:UInt64} = 0
LIMIT {limit:UInt64}
"""

# Severity numbers 17-24 are ERROR..FATAL4 (OTel logs data model); some SDKs set only the text.
_LOGGED_ERRORS = """
SELECT DISTINCT TraceId AS trace_id, SpanId AS span_id
FROM otel_logs
WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
  AND TraceId != '' AND SpanId != ''
  AND (SeverityNumber >= 17 OR upper(SeverityText) IN ('ERROR', 'FATAL', 'CRITICAL'))
LIMIT {limit:UInt64}
"""

_COUNT = """
SELECT count() AS n FROM otel_traces
WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
"""


async def logged_error_spans(store: Store, start: datetime, end: datetime) -> set[tuple[str, str]]:
    """(trace id, span id) of the spans an error-level log record of [start, end) names."""
    rows = await store.query(
        _LOGGED_ERRORS, {"start": start, "end": end, "limit": MAX_LOGGED_ERRORS}
    )
    return {(r["trace_id"], r["span_id"]) for r in rows}


async def load_spans(
    store: Store,
    start: datetime,
    end: datetime,
    *,
    max_spans: int = MAX_SPANS,
    logged_errors: bool = True,
) -> list[SpanRow]:
    """Spans of [start, end), thinned by trace to about `max_spans`; with `logged_errors`, a
    span an error-level log record names counts as failed (`with_logged_errors`)."""
    if max_spans < 1:
        raise ValueError(f"max_spans must be >= 1, got {max_spans}")
    count_rows = await store.query(_COUNT, {"start": start, "end": end})
    total = int(count_rows[0]["n"]) if count_rows else 0
    modulus = max(1, -(-total // max_spans))
    rows = await store.query(
        _SPANS, {"start": start, "end": end, "modulus": modulus, "limit": max_spans}
    )
    spans = [
        SpanRow(
            r["trace_id"],
            r["span_id"],
            r["parent_span_id"],
            r["service"],
            r["name"],
            int(r["start_ns"]),
            int(r["duration_ns"]),
            bool(r["error"]),
            r["peer"],
        )
        for r in rows
    ]
    if not logged_errors:
        return spans
    return with_logged_errors(spans, await logged_error_spans(store, start, end))
