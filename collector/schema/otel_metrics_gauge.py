"""`otel_metrics_gauge`: OTLP gauge data points, as the exporter's current (>= v0.160) DDL."""

from __future__ import annotations

from collector.schema.ddl import SchemaOptions, render_table
from collector.schema.otel_metrics_common import EXEMPLARS, metrics_table

__all__ = ["TABLE", "statements"]

TABLE = "otel_metrics_gauge"

SPEC = metrics_table(
    TABLE,
    """
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),
"""
    + EXEMPLARS
    + """
""",
)


def statements(options: SchemaOptions) -> list[str]:
    """DDL for gauge metrics under `options`."""
    return render_table(SPEC, options)
