"""ClickHouse queries of the service map: per-minute aggregates first, raw parent/child joins
for data no sidecar wrote (imported traces, other instrumentation).

Aggregates (`meshlens_edges_1m`, from CLIENT spans with a known callee) survive sampling and
lost server spans. The raw join pairs a span with its parent in another service; its latency
is the caller-side span's, its errors the callee span's status. Every query takes
`{start:DateTime64(9)}` / `{end:DateTime64(9)}` (end exclusive) and returns durations in ms.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from collector.store import Rows, Store

__all__ = ["CallGraphRepository"]

_AGG_COUNTS = """
    toUInt64(sum(count)) AS requests,
    toUInt64(sum(error_count)) AS errors,
    sum(duration_sum_ns) / greatest(requests, 1) / 1e6 AS mean_ms"""
_AGG_STATS = (
    _AGG_COUNTS + ",\n    quantilesTDigestMerge(0.5, 0.9, 0.99)(duration_quantiles_ns) AS q"
)
_NO_Q = ",\n    CAST([], 'Array(Float64)') AS q"

# Merging t-digest states dominates the map's cost (about 8 ms per 1000 states here), so
# per-route percentiles are opt-in: per-edge percentiles plus per-route counts stay fast.
_AGG_EDGES = """
SELECT %(keys)s,%(stats)s
FROM meshlens_edges_1m
WHERE minute >= toStartOfMinute({start:DateTime64(9)}) AND minute < {end:DateTime64(9)}
GROUP BY %(keys)s
ORDER BY %(keys)s
"""

_AGG_SERVICES = f"""
SELECT service, {_AGG_STATS}
FROM meshlens_services_1m
WHERE minute >= toStartOfMinute({{start:DateTime64(9)}}) AND minute < {{end:DateTime64(9)}}
GROUP BY service
ORDER BY service
"""

_AGG_SERIES = f"""
SELECT toUnixTimestamp(minute) AS minute_s, caller, callee,{_AGG_STATS}
FROM meshlens_edges_1m
WHERE minute >= toStartOfMinute({{start:DateTime64(9)}}) AND minute < {{end:DateTime64(9)}}
  AND ({{caller:String}} = '' OR caller = {{caller:String}})
  AND ({{callee:String}} = '' OR callee = {{callee:String}})
GROUP BY minute_s, caller, callee
ORDER BY minute_s, caller, callee
"""

# Pairs a span with its parent when they belong to different services. The parent may have
# started before the window: look back a bounded 10 minutes for it.
_PAIRS = """
WITH child AS (
    SELECT TraceId, ParentSpanId, ServiceName, SpanName, Timestamp,
           StatusCode IN ('Error', 'STATUS_CODE_ERROR')
             OR toUInt16OrZero(SpanAttributes['http.response.status_code']) >= 500 AS failed
    FROM otel_traces
    WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
      AND ParentSpanId != ''
), parent AS (
    SELECT TraceId, SpanId, ServiceName, Duration
    FROM otel_traces
    WHERE Timestamp >= {start:DateTime64(9)} - INTERVAL 10 MINUTE
      AND Timestamp < {end:DateTime64(9)}
)
SELECT %(select)s
FROM child INNER JOIN parent
  ON child.TraceId = parent.TraceId AND child.ParentSpanId = parent.SpanId
WHERE child.ServiceName != parent.ServiceName
  AND ({caller:String} = '' OR parent.ServiceName = {caller:String})
  AND ({callee:String} = '' OR child.ServiceName = {callee:String})
GROUP BY %(group)s
ORDER BY %(group)s
"""

_RAW_COUNTS = """toUInt64(count()) AS requests, toUInt64(countIf(child.failed)) AS errors,
    avg(parent.Duration) / 1e6 AS mean_ms"""
_RAW_STATS = _RAW_COUNTS + ", quantiles(0.5, 0.9, 0.99)(parent.Duration) AS q"
_RAW_KEYS = "parent.ServiceName AS caller, child.ServiceName AS callee"
_RAW_SERIES = _PAIRS % {
    "select": "toUnixTimestamp(toStartOfMinute(child.Timestamp)) AS minute_s, "
    "parent.ServiceName AS caller, child.ServiceName AS callee, " + _RAW_STATS,
    "group": "minute_s, caller, callee",
}

_RAW_SERVICES = """
SELECT ServiceName AS service, toUInt64(count()) AS requests,
       toUInt64(countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR'))) AS errors,
       avg(Duration) / 1e6 AS mean_ms, quantiles(0.5, 0.9, 0.99)(Duration) AS q
FROM otel_traces
WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
  AND SpanKind IN ('Server', 'SPAN_KIND_SERVER', 'Consumer', 'SPAN_KIND_CONSUMER')
GROUP BY service
ORDER BY service
"""


class CallGraphRepository:
    """The service-map SQL, run on one store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def _run(self, sql: str, start: datetime, end: datetime, **extra: Any) -> Rows:
        params: dict[str, Any] = {"start": start, "end": end, "caller": "", "callee": ""}
        params.update(extra)
        return await self._store.query(sql, params)

    async def edges(
        self, start: datetime, end: datetime, *, raw: bool, by_route: bool, quantiles: bool
    ) -> Rows:
        """Per caller, callee (and route): requests, errors, mean_ms, q (ns quantiles or [])."""
        if raw:
            keys = _RAW_KEYS + (", child.SpanName AS route" if by_route else "")
            stats = _RAW_STATS if quantiles else _RAW_COUNTS + _NO_Q
            group = "caller, callee" + (", route" if by_route else "")
            sql = _PAIRS % {"select": f"{keys}, {stats}", "group": group}
        else:
            keys = "caller, callee" + (", route" if by_route else "")
            stats = _AGG_STATS if quantiles else _AGG_COUNTS + _NO_Q
            sql = _AGG_EDGES % {"keys": keys, "stats": stats}
        return await self._run(sql, start, end)

    async def services(self, start: datetime, end: datetime, *, raw: bool) -> Rows:
        """Server-side RED per service (SERVER spans)."""
        return await self._run(_RAW_SERVICES if raw else _AGG_SERVICES, start, end)

    async def series(
        self, start: datetime, end: datetime, *, raw: bool, caller: str = "", callee: str = ""
    ) -> Rows:
        """Per minute and edge (optionally one caller and/or callee): minute_s and stats."""
        sql = _RAW_SERIES if raw else _AGG_SERIES
        return await self._run(sql, start, end, caller=caller, callee=callee)

    async def has_aggregates(self, start: datetime, end: datetime) -> bool:
        """True when the edge aggregate table holds any row for the window."""
        rows = await self._run(
            "SELECT count() AS n FROM meshlens_edges_1m WHERE minute >= "
            "toStartOfMinute({start:DateTime64(9)}) AND minute < {end:DateTime64(9)}",
            start,
            end,
        )
        return bool(rows and rows[0]["n"])
