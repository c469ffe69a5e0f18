"""The ClickHouse schema: the OTel exporter's tables plus meshlens' own, one module per table.

Tables (see README.md): otel_traces, otel_traces_trace_id_ts (+ _mv), otel_metrics_gauge / _sum /
_histogram / _exponential_histogram / _summary (exporter >= v0.160 generation), and ours:
meshlens_schema_version, meshlens_edges_1m (+ _mv, sidecar CLIENT spans), meshlens_services_1m
(+ _mv, sidecar SERVER spans). `migrate(runner, options)` applies missing versions; stores call
it from `migrate()`.
"""

from __future__ import annotations

from collector.schema.ddl import SchemaOptions, quote_ident
from collector.schema.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    all_statements,
    migrate,
)

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "SchemaOptions",
    "all_statements",
    "migrate",
    "quote_ident",
]
