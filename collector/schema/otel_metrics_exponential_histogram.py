"""`otel_metrics_exponential_histogram`: exponential histogram points, exporter DDL >= v0.160.

The name is the exporter code's default (its newest README says `otel_metrics_exp_histogram`).
"""

from __future__ import annotations

from collector.schema.ddl import SchemaOptions, render_table
from collector.schema.otel_metrics_common import EXEMPLARS, metrics_table

__all__ = ["TABLE", "statements"]

TABLE = "otel_metrics_exponential_histogram"

SPEC = metrics_table(
    TABLE,
    """
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    Scale Int32 CODEC(ZSTD(1)),
    ZeroCount UInt64 CODEC(ZSTD(1)),
    PositiveOffset Int32 CODEC(ZSTD(1)),
    PositiveBucketCounts Array(UInt64) CODEC(ZSTD(1)),
    NegativeOffset Int32 CODEC(ZSTD(1)),
    NegativeBucketCounts Array(UInt64) CODEC(ZSTD(1)),
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
    """DDL for exponential_histogram metrics under `options`."""
    return render_table(SPEC, options)
