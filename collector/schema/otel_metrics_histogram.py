"""`otel_metrics_histogram`: OTLP histogram data points, as the exporter's DDL >= v0.160."""

from __future__ import annotations

from collector.schema.ddl import SchemaOptions, render_table
from collector.schema.otel_metrics_common import EXEMPLARS, metrics_table

__all__ = ["TABLE", "statements"]

TABLE = "otel_metrics_histogram"

SPEC = metrics_table(
    TABLE,
    """
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    BucketCounts Array(UInt64) CODEC(ZSTD(1)),
    ExplicitBounds Array(Float64) CODEC(ZSTD(1)),
"""
    + EXEMPLARS
    + """
    Flags UInt32 CODEC(ZSTD(1)),
    Min Float64 CODEC(ZSTD(1)),
    Max Float64 CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),
""",
)


def statements(options: SchemaOptions) -> list[str]:
    """DDL for histogram metrics under `options`."""
    return render_table(SPEC, options)
