"""`meshlens_schema_version`: one row per applied migration (version, description, applied_at).

ReplacingMergeTree on `version` plus a fixed dedup token per version, so two processes migrating at
once still record each version once; read it with `max(version)` or `FINAL`.
"""

from __future__ import annotations

from collector.schema.ddl import SchemaOptions, TableSpec, render_table

__all__ = ["TABLE", "statements"]

TABLE = "meshlens_schema_version"

SPEC = TableSpec(
    name=TABLE,
    columns="""
    version UInt32,
    description String,
    applied_at DateTime64(3, 'UTC')
""",
    engine="ReplacingMergeTree",
    keys="ORDER BY version",
    ttl_expr=None,
    settings="index_granularity = 8192",
)


def statements(options: SchemaOptions) -> list[str]:
    """DDL for the version table (created before any migration runs)."""
    return render_table(SPEC, options)
