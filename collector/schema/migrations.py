"""Versioned schema migrations: the DDL each version adds, and `migrate()` applying missing ones.

A version is applied by running its (idempotent, IF NOT EXISTS) statements, then recording it in
meshlens_schema_version with a fixed dedup token: re-running or racing another process is harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from collector.schema import (
    meshlens_edges_1m,
    meshlens_schema_version,
    meshlens_services_1m,
    meshlens_spans_by_time,
    meshlens_trace_summaries,
    otel_logs,
    otel_metrics_exponential_histogram,
    otel_metrics_gauge,
    otel_metrics_histogram,
    otel_metrics_sum,
    otel_metrics_summary,
    otel_traces,
    otel_traces_trace_id_ts,
)
from collector.schema.ddl import SchemaOptions, quote_ident
from collector.store.base import StoreRejected

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration", "SchemaRunner", "all_statements", "migrate"]

logger = logging.getLogger(__name__)

# ClickHouse error codes a concurrent migration can hit while the other process wins the race.
_ALREADY_EXISTS = frozenset({57, 82})  # TABLE_ALREADY_EXISTS, DATABASE_ALREADY_EXISTS


class SchemaRunner(Protocol):
    """The part of a Store that migrations use."""

    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    async def query(
        self, sql: str, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]: ...

    async def insert(
        self, table: str, columns: Mapping[str, Sequence[Any]], *, dedup_token: str | None = None
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: a description and the DDL statements that bring the schema to it.

    `apply`, when given, brings the schema to the version instead of running `statements` one by
    one (for steps that are not DDL, such as filling a new table from existing data); it gets
    the runner, the options and the DDL runner that tolerates a concurrent migration's tables.
    """

    version: int
    description: str
    statements: Callable[[SchemaOptions], list[str]]
    apply: (
        Callable[[Any, SchemaOptions, Callable[[str], Awaitable[None]]], Awaitable[None]] | None
    ) = None


def _v1(options: SchemaOptions) -> list[str]:
    return [
        *otel_traces.statements(options),
        *otel_traces_trace_id_ts.statements(options),
        *otel_metrics_gauge.statements(options),
        *otel_metrics_sum.statements(options),
        *otel_metrics_histogram.statements(options),
        *otel_metrics_exponential_histogram.statements(options),
        *otel_metrics_summary.statements(options),
    ]


def _v2(options: SchemaOptions) -> list[str]:
    return [*meshlens_edges_1m.statements(options), *meshlens_services_1m.statements(options)]


def _v4(options: SchemaOptions) -> list[str]:
    return [*meshlens_edges_1m.v4_statements(options), *meshlens_services_1m.v4_statements(options)]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "OTel exporter tables: traces, trace-id lookup, metrics (v0.160+)", _v1),
    Migration(2, "meshlens per-minute edge and service aggregates", _v2),
    Migration(3, "OTel exporter otel_logs (v0.151+, plus TimestampTime)", otel_logs.statements),
    Migration(4, "edge and service aggregates from sidecar spans only", _v4),
    Migration(
        5,
        "per-trace summaries for trace search",
        meshlens_trace_summaries.statements,
        meshlens_trace_summaries.apply,
    ),
    Migration(
        6,
        "span filter columns in time order for searches without a service",
        meshlens_spans_by_time.statements,
        meshlens_spans_by_time.apply,
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version


def all_statements(options: SchemaOptions) -> list[str]:
    """Every DDL statement of the latest schema, in order (database and version table first)."""
    statements = [
        f"CREATE DATABASE IF NOT EXISTS {quote_ident(options.database)}{options.on_cluster}",
        *meshlens_schema_version.statements(options),
    ]
    for migration in MIGRATIONS:
        statements.extend(migration.statements(options))
    return statements


async def _run_ddl(runner: SchemaRunner, sql: str) -> None:
    try:
        await runner.command(sql)
    except StoreRejected as exc:
        if exc.code not in _ALREADY_EXISTS:
            raise


async def _applied(runner: SchemaRunner, options: SchemaOptions) -> set[int]:
    table = options.qualified(meshlens_schema_version.TABLE)
    rows = await runner.query(f"SELECT DISTINCT version FROM {table}")
    return {int(row["version"]) for row in rows}


async def migrate(
    runner: SchemaRunner,
    options: SchemaOptions,
    *,
    migrations: Sequence[Migration] = MIGRATIONS,
    clock: Callable[[], float] = time.time,
) -> int:
    """Apply the versions of `migrations` not yet recorded; returns the latest recorded version."""
    await _run_ddl(
        runner, f"CREATE DATABASE IF NOT EXISTS {quote_ident(options.database)}{options.on_cluster}"
    )
    for sql in meshlens_schema_version.statements(options):
        await _run_ddl(runner, sql)
    applied = await _applied(runner, options)
    for migration in migrations:
        if migration.version in applied:
            continue
        if migration.apply is not None:
            await migration.apply(runner, options, lambda sql: _run_ddl(runner, sql))
        else:
            for sql in migration.statements(options):
                await _run_ddl(runner, sql)
        await runner.insert(
            meshlens_schema_version.TABLE,
            {
                "version": [migration.version],
                "description": [migration.description],
                "applied_at": [int(clock() * 1000)],
            },
            dedup_token=f"meshlens_schema_version:{migration.version}",
        )
        applied.add(migration.version)
        logger.info(
            "schema migration applied",
            extra={"version": migration.version, "description": migration.description},
        )
    return max(applied, default=0)
