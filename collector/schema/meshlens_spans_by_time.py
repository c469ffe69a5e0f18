"""`meshlens_spans_by_time` (+ `_mv`): the span filter columns of otel_traces in time order.

otel_traces is ordered by (ServiceName, SpanName, time): a search without a service reads every
(service, span name) range overlapping its window, and each of those granules spans hours, so a
15-minute window decodes the attribute maps of most of the day. This copy holds only Timestamp,
TraceId, ServiceName, SpanName, SpanKind, StatusCode and SpanAttributes ordered by Timestamp
(13.3 B per bench span: a trace's spans sit together, so its id compresses well): such a search
reads the newest matching rows of its window here, trace ids only for those rows (see
analytics/traces/repository.py).

Version 6 creates the table, fills it from the spans already stored, then creates the view (see
collector/schema/fill.py). Not created in cluster mode (its fill cannot run ON CLUSTER and a
partial copy would hide older traces): searches there read otel_traces as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from collector.schema.ddl import SchemaOptions, TableSpec, ViewSpec, render_table, render_view
from collector.schema.fill import Runner, fill_then_view

__all__ = ["COLUMNS", "FILL_CHUNK_ROWS", "TABLE", "VIEW", "apply", "fill_sql", "statements"]

FILL_CHUNK_ROWS = 4_000_000

TABLE = "meshlens_spans_by_time"
VIEW = "meshlens_spans_by_time_mv"
COLUMNS = (
    "Timestamp",
    "TraceId",
    "ServiceName",
    "SpanName",
    "SpanKind",
    "StatusCode",
    "SpanAttributes",
)

SPEC = TableSpec(
    name=TABLE,
    columns="""
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1))
""",
    engine="MergeTree",
    # Partitions and TTL as otel_traces, so a day leaves both tables together.
    keys="PARTITION BY toDate(Timestamp)\nORDER BY (Timestamp)",
    ttl_expr="toDateTime(Timestamp)",
)

_SELECT = f"SELECT {', '.join(COLUMNS)}\nFROM {{source}}"

VIEW_SPEC = ViewSpec(name=VIEW, target=TABLE, source="otel_traces", select=_SELECT)


def statements(options: SchemaOptions) -> list[str]:
    """Version 6's DDL (none in cluster mode): the table, then the view."""
    if options.cluster:
        return []
    return [*render_table(SPEC, options), *render_view(VIEW_SPEC, options)]


def fill_sql(options: SchemaOptions) -> str:
    """INSERT ... SELECT of the spans in one otel_traces partition and hash bucket."""
    select = _SELECT.replace("{source}", options.qualified("otel_traces"))
    return (
        f"INSERT INTO {options.qualified(TABLE)}\n{select}\n"
        "WHERE _partition_id = {partition:String}\n"
        "  AND cityHash64(TraceId, SpanId) % {buckets:UInt64} = {bucket:UInt64}"
    )


async def apply(
    runner: Runner, options: SchemaOptions, run_ddl: Callable[[str], Awaitable[None]]
) -> None:
    """Bring a store to version 6: table, fill from stored spans, view (single node only)."""
    if options.cluster:
        return
    await fill_then_view(
        runner,
        options,
        run_ddl,
        table=SPEC,
        view=VIEW_SPEC,
        fill_sql=fill_sql(options),
        chunk_rows=FILL_CHUNK_ROWS,
    )
