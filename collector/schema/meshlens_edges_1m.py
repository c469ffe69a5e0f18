"""`meshlens_edges_1m`: per-minute service-edge aggregates for the service map, fed by a view.

The view reads CLIENT spans as they are inserted into otel_traces (sidecars write one per attempt):
caller = ServiceName, callee = SpanAttributes['meshlens.upstream'] or else ['server.address'],
route = ['meshlens.route'], status_code = ['http.response.status_code'] (0 when absent). Spans
without a callee are skipped. error_count counts StatusCode 'Error' (or the old
'STATUS_CODE_ERROR') or status >= 500. Durations are ns; merge the quantile state with
`quantilesTDigestMerge(0.5, 0.9, 0.99)`.

Only sidecar spans count (schema version 4): an application's own OTel CLIENT span for the same
call would count it twice. The version-2 view (every CLIENT span) stays as `VIEW_SPEC_V2`.
"""

from __future__ import annotations

from collector.schema.ddl import (
    SchemaOptions,
    TableSpec,
    ViewSpec,
    render_drop_view,
    render_table,
    render_view,
)

__all__ = [
    "QUANTILES",
    "SIDECAR_SCOPE",
    "SIDECAR_SPAN",
    "TABLE",
    "VIEW",
    "statements",
    "v4_statements",
]

TABLE = "meshlens_edges_1m"
VIEW = "meshlens_edges_1m_mv"
QUANTILES = "0.5, 0.9, 0.99"
# The instrumentation scope of every span a sidecar writes (sidecar/telemetry/otlp.py's
# TraceEncoder; a test checks they agree: the collector does not import the sidecar).
SIDECAR_SCOPE = "meshlens.sidecar"
# A span written by a sidecar: its scope, or (sidecar spans imported from a file, which carry
# another scope) a meshlens.* attribute, which application instrumentation never sets.
# (mapContainsKeyLike would be shorter but fails inside the view on ClickHouse 26.9: code 10.)
SIDECAR_SPAN = (
    f"(ScopeName = '{SIDECAR_SCOPE}'"
    " OR arrayExists(k -> startsWith(k, 'meshlens.'), mapKeys(SpanAttributes)))"
)

SPEC = TableSpec(
    name=TABLE,
    columns=f"""
    minute DateTime CODEC(Delta, ZSTD(1)),
    caller LowCardinality(String) CODEC(ZSTD(1)),
    callee LowCardinality(String) CODEC(ZSTD(1)),
    route LowCardinality(String) CODEC(ZSTD(1)),
    status_code UInt16 CODEC(ZSTD(1)),
    count SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    error_count SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    duration_sum_ns SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    duration_quantiles_ns AggregateFunction(quantilesTDigest({QUANTILES}), UInt64) CODEC(ZSTD(1))
""",
    engine="AggregatingMergeTree",
    keys="PARTITION BY toDate(minute)\nORDER BY (minute, caller, callee, route, status_code)",
    ttl_expr="minute",
)


def _view(where: str) -> ViewSpec:
    """The edge view over CLIENT spans matching `where` (versions differ only in this filter)."""
    return ViewSpec(
        name=VIEW,
        target=TABLE,
        source="otel_traces",
        select=f"""
SELECT
    toStartOfMinute(Timestamp) AS minute,
    ServiceName AS caller,
    if(SpanAttributes['meshlens.upstream'] != '',
       SpanAttributes['meshlens.upstream'], SpanAttributes['server.address']) AS callee,
    SpanAttributes['meshlens.route'] AS route,
    toUInt16OrZero(SpanAttributes['http.response.status_code']) AS status_code,
    toUInt64(count()) AS count,
    toUInt64(countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR') OR status_code >= 500))
        AS error_count,
    sum(Duration) AS duration_sum_ns,
    quantilesTDigestState({QUANTILES})(Duration) AS duration_quantiles_ns
FROM {{source}}
WHERE {where}
GROUP BY minute, caller, callee, route, status_code
""",
    )


_CLIENT = "SpanKind IN ('Client', 'SPAN_KIND_CLIENT') AND callee != ''"
VIEW_SPEC_V2 = _view(_CLIENT)  # version 2 (applied migrations never change)
VIEW_SPEC = _view(f"{_CLIENT}\n  AND {SIDECAR_SPAN}")  # version 4: sidecar spans only


def statements(options: SchemaOptions) -> list[str]:
    """Version 2: DDL for the edge table, then the view that fills it (every CLIENT span)."""
    return render_table(SPEC, options) + render_view(VIEW_SPEC_V2, options)


def v4_statements(options: SchemaOptions) -> list[str]:
    """Version 4: the view again, counting sidecar CLIENT spans only."""
    return render_drop_view(VIEW, options) + render_view(VIEW_SPEC, options)
