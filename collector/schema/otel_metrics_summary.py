"""`otel_metrics_summary`: OTLP summary data points, as the exporter's current (>= v0.160) DDL."""

from __future__ import annotations

from collector.schema.ddl import SchemaOptions, render_table
from collector.schema.otel_metrics_common import metrics_table

__all__ = ["TABLE", "statements"]

TABLE = "otel_metrics_summary"

SPEC = metrics_table(
    TABLE,
    """
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    ValueAtQuantiles Nested (
        Quantile Float64,
        Value Float64
    ) CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),
""",
)


def statements(options: SchemaOptions) -> list[str]:
    """DDL for summary metrics under `options`."""
    return render_table(SPEC, options)
