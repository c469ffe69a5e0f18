"""Reading spans for root-cause ranking from otel_traces (bounded: a sample of whole traces)."""

from __future__ import annotations

from datetime import datetime

from analytics.rca.ranking import SpanRow
from collector.store import Store

__all__ = ["MAX_SPANS", "load_spans"]

MAX_SPANS = 200_000

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

_COUNT = """
SELECT count() AS n FROM otel_traces
WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
"""


async def load_spans(
    store: Store, start: datetime, end: datetime, *, max_spans: int = MAX_SPANS
) -> list[SpanRow]:
    """Spans of [start, end), thinned by trace to about `max_spans`."""
    if max_spans < 1:
        raise ValueError(f"max_spans must be >= 1, got {max_spans}")
    count_rows = await store.query(_COUNT, {"start": start, "end": end})
    total = int(count_rows[0]["n"]) if count_rows else 0
    modulus = max(1, -(-total // max_spans))
    rows = await store.query(
        _SPANS, {"start": start, "end": end, "modulus": modulus, "limit": max_spans}
    )
    return [
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
