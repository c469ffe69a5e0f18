"""`otel_traces_trace_id_ts` + `otel_traces_trace_id_ts_mv`: trace id -> time window lookup.

The exporter's newest form: AggregatingMergeTree with SimpleAggregateFunction(min|max, DateTime),
weekly partitions; Grafana's plugin reads it as `min(Start)`, `max(End) + 1`.
"""

from __future__ import annotations

from collector.schema.ddl import SchemaOptions, TableSpec, ViewSpec, render_table, render_view

__all__ = ["TABLE", "VIEW", "statements"]

TABLE = "otel_traces_trace_id_ts"
VIEW = "otel_traces_trace_id_ts_mv"

SPEC = TableSpec(
    name=TABLE,
    columns="""
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
""",
    engine="AggregatingMergeTree",
    keys="PARTITION BY toStartOfWeek(Start)\nORDER BY (TraceId)",
    ttl_expr="toDateTime(Start)",
    sharding_key="cityHash64(TraceId)",
)

VIEW_SPEC = ViewSpec(
    name=VIEW,
    target=TABLE,
    source="otel_traces",
    select="""
SELECT TraceId, min(toDateTime(Timestamp)) AS Start, max(toDateTime(Timestamp)) AS End
FROM {source}
WHERE TraceId != ''
GROUP BY TraceId
""",
)


def statements(options: SchemaOptions) -> list[str]:
    """DDL for the lookup table, then its materialized view (the view needs the table)."""
    return render_table(SPEC, options) + render_view(VIEW_SPEC, options)
