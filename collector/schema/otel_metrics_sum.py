"""`otel_metrics_sum`: OTLP sum data points, as the exporter's current (>= v0.160) DDL."""

from __future__ import annotations

from collector.schema.ddl import SchemaOptions, render_table
from collector.schema.otel_metrics_common import EXEMPLARS, metrics_table

__all__ = ["TABLE", "statements"]

TABLE = "otel_metrics_sum"

SPEC = metrics_table(
    TABLE,
    """
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),
"""
    + EXEMPLARS
    + """
    AggregationTemporality Int32 CODEC(ZSTD(1)),
    IsMonotonic Boolean CODEC(Delta, ZSTD(1)),
""",
)


def statements(options: SchemaOptions) -> list[str]:
    """DDL for sum metrics under `options`."""
    return render_table(SPEC, options)
