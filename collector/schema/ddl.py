"""DDL rendering shared by the table files: engine, TTL, ON CLUSTER, local + Distributed tables.

Single-node mode emits one `CREATE TABLE` per table; cluster mode emits a Replicated `<name>_local`
table ON CLUSTER plus a Distributed table under the public name; views read/write local tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DEDUP_WINDOW_BLOCKS",
    "SchemaOptions",
    "TableSpec",
    "ViewSpec",
    "quote_ident",
    "render_drop_view",
    "render_table",
    "render_view",
]

# Blocks remembered per table for insert deduplication: a retried insert (same dedup token) is
# dropped as long as fewer than this many other blocks were inserted into the table in between.
DEDUP_WINDOW_BLOCKS = 10_000

_NEWLINE = "\n"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REPLICA_PATH = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"


def quote_ident(name: str) -> str:
    """Backtick-quote a plain identifier; anything but [A-Za-z0-9_] is refused (never escaped)."""
    if not _IDENT.match(name):
        raise ValueError(f"invalid ClickHouse identifier: {name!r}")
    return f"`{name}`"


@dataclass(frozen=True, slots=True)
class SchemaOptions:
    """How the schema is rendered: database, retention and (optional) cluster name."""

    database: str = "default"
    ttl_days: int = 0
    cluster: str | None = None

    def __post_init__(self) -> None:
        quote_ident(self.database)
        if self.cluster is not None:
            quote_ident(self.cluster)
        if self.ttl_days < 0:
            raise ValueError(f"ttl_days must be >= 0, got {self.ttl_days}")

    def qualified(self, table: str) -> str:
        """`database`.`table` as written in DDL."""
        return f"{quote_ident(self.database)}.{quote_ident(table)}"

    def local_name(self, table: str) -> str:
        """The name of the table that holds the data: `<table>_local` in cluster mode."""
        return f"{table}_local" if self.cluster else table

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {quote_ident(self.cluster)}" if self.cluster else ""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table as the exporter (or we) define it, independent of single-node/cluster mode.

    `engine` is the MergeTree family member without the `Replicated` prefix, e.g. `MergeTree` or
    `AggregatingMergeTree`; `ttl_expr` is the DateTime expression TTL counts from (None: no TTL).
    """

    name: str
    columns: str
    engine: str
    keys: str
    ttl_expr: str | None
    settings: str = "index_granularity = 8192, ttl_only_drop_parts = 1"
    sharding_key: str = "rand()"
    engine_args: str = ""


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """A materialized view `name` TO `target` AS `select` (the select names `{source}`)."""

    name: str
    target: str
    source: str
    select: str


def _ttl(spec: TableSpec, options: SchemaOptions) -> str:
    if spec.ttl_expr is None or options.ttl_days == 0:
        return ""
    return f"TTL {spec.ttl_expr} + toIntervalDay({options.ttl_days})\n"


def _engine(spec: TableSpec, options: SchemaOptions) -> str:
    if options.cluster:
        args = _REPLICA_PATH + (f", {spec.engine_args}" if spec.engine_args else "")
        return f"Replicated{spec.engine}({args})"
    return f"{spec.engine}({spec.engine_args})"


def _settings(spec: TableSpec, options: SchemaOptions) -> str:
    # Replicated tables deduplicate through Keeper (replicated_deduplication_window); plain
    # MergeTree needs this window or insert_deduplication_token is ignored.
    if options.cluster:
        return spec.settings
    return f"{spec.settings}, non_replicated_deduplication_window = {DEDUP_WINDOW_BLOCKS}"


def render_table(spec: TableSpec, options: SchemaOptions) -> list[str]:
    """CREATE statements for `spec`: one table, or local + Distributed in cluster mode."""
    local = options.local_name(spec.name)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {options.qualified(local)}{options.on_cluster}\n"
        f"(\n{spec.columns.strip(_NEWLINE)}\n)\n"
        f"ENGINE = {_engine(spec, options)}\n"
        f"{spec.keys.strip()}\n"
        f"{_ttl(spec, options)}"
        f"SETTINGS {_settings(spec, options)}"
    ]
    if options.cluster:
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {options.qualified(spec.name)}{options.on_cluster}\n"
            f"AS {options.qualified(local)}\n"
            f"ENGINE = Distributed({quote_ident(options.cluster)}, "
            f"{quote_ident(options.database)}, {quote_ident(local)}, {spec.sharding_key})"
        )
    return statements


def render_view(spec: ViewSpec, options: SchemaOptions) -> list[str]:
    """CREATE MATERIALIZED VIEW; in cluster mode it reads and writes the shard-local tables."""
    source = options.qualified(options.local_name(spec.source))
    target = options.qualified(options.local_name(spec.target))
    return [
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {options.qualified(spec.name)}"
        f"{options.on_cluster}\nTO {target}\nAS {spec.select.strip().replace('{source}', source)}"
    ]


def render_drop_view(name: str, options: SchemaOptions) -> list[str]:
    """DROP VIEW IF EXISTS: a view's SELECT cannot be altered in place, only replaced."""
    return [f"DROP VIEW IF EXISTS {options.qualified(name)}{options.on_cluster} SYNC"]
