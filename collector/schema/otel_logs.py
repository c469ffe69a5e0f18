"""`otel_logs`: log records, as the exporter's >= v0.151 DDL (bloom-filter branch).

Plus `TimestampTime DateTime DEFAULT toDateTime(Timestamp)`: the <= v0.150 column that Grafana
ClickHouse plugins before 4.20 filter on; inserts never list it, so both generations read the table.
"""

from __future__ import annotations

from collector.schema.ddl import SchemaOptions, TableSpec, render_table

__all__ = ["TABLE", "statements"]

TABLE = "otel_logs"

_MATERIALIZED = (
    "k8s.cluster.name",
    "k8s.container.name",
    "k8s.deployment.name",
    "k8s.namespace.name",
    "k8s.node.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "deployment.environment.name",
)

_COLUMNS = (
    """
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TimestampTime DateTime DEFAULT toDateTime(Timestamp),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    TraceFlags UInt8,
    SeverityText LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber UInt8,
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    EventName String CODEC(ZSTD(1)),
"""
    + "".join(
        f"    `__otel_materialized_{key}` LowCardinality(String) "
        f"MATERIALIZED ResourceAttributes['{key}'] CODEC(ZSTD(1)),\n"
        for key in _MATERIALIZED
    )
    + """    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_lower_body lower(Body) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
"""
)

SPEC = TableSpec(
    name=TABLE,
    columns=_COLUMNS,
    engine="MergeTree",
    keys="PARTITION BY toDate(Timestamp)\n"
    "ORDER BY (toStartOfFiveMinutes(Timestamp), ServiceName, Timestamp)",
    ttl_expr="toDateTime(Timestamp)",
)


def statements(options: SchemaOptions) -> list[str]:
    """DDL for otel_logs under `options`."""
    return render_table(SPEC, options)
