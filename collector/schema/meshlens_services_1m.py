"""`meshlens_services_1m`: per-minute RED aggregates per service and route from SERVER spans.

route = SpanAttributes['meshlens.route'] or else SpanName; status_code, error_count, the duration
columns and the quantile state are defined as in meshlens_edges_1m. Since schema version 4 only
the inbound sidecar's SERVER spans count (not the application's own span for the same request).
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
from collector.schema.meshlens_edges_1m import QUANTILES, SIDECAR_SPAN

__all__ = ["TABLE", "VIEW", "statements", "v4_statements"]

TABLE = "meshlens_services_1m"
VIEW = "meshlens_services_1m_mv"

SPEC = TableSpec(
    name=TABLE,
    columns=f"""
    minute DateTime CODEC(Delta, ZSTD(1)),
    service LowCardinality(String) CODEC(ZSTD(1)),
    route LowCardinality(String) CODEC(ZSTD(1)),
    status_code UInt16 CODEC(ZSTD(1)),
    count SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    error_count SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    duration_sum_ns SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    duration_quantiles_ns AggregateFunction(quantilesTDigest({QUANTILES}), UInt64) CODEC(ZSTD(1))
""",
    engine="AggregatingMergeTree",
    keys="PARTITION BY toDate(minute)\nORDER BY (minute, service, route, status_code)",
    ttl_expr="minute",
)


def _view(where: str) -> ViewSpec:
    """The service view over SERVER spans matching `where` (versions differ only in this filter)."""
    return ViewSpec(
        name=VIEW,
        target=TABLE,
        source="otel_traces",
        select=f"""
SELECT
    toStartOfMinute(Timestamp) AS minute,
    ServiceName AS service,
    if(SpanAttributes['meshlens.route'] != '', SpanAttributes['meshlens.route'], SpanName) AS route,
    toUInt16OrZero(SpanAttributes['http.response.status_code']) AS status_code,
    toUInt64(count()) AS count,
    toUInt64(countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR') OR status_code >= 500))
        AS error_count,
    sum(Duration) AS duration_sum_ns,
    quantilesTDigestState({QUANTILES})(Duration) AS duration_quantiles_ns
FROM {{source}}
WHERE {where}
GROUP BY minute, service, route, status_code
""",
    )


_SERVER = "SpanKind IN ('Server', 'SPAN_KIND_SERVER')"
VIEW_SPEC_V2 = _view(_SERVER)  # version 2 (applied migrations never change)
VIEW_SPEC = _view(f"{_SERVER} AND {SIDECAR_SPAN}")  # version 4: inbound sidecar spans only


def statements(options: SchemaOptions) -> list[str]:
    """Version 2: DDL for the per-service table, then the view that fills it (every SERVER span)."""
    return render_table(SPEC, options) + render_view(VIEW_SPEC_V2, options)


def v4_statements(options: SchemaOptions) -> list[str]:
    """Version 4: the view again, counting the inbound sidecars' SERVER spans only."""
    return render_drop_view(VIEW, options) + render_view(VIEW_SPEC, options)
