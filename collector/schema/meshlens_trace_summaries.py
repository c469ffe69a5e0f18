"""`meshlens_trace_summaries` (+ `_mv`): one partial summary per trace and insert block.

Trace search reads a hit's extent, span and error counts, root span and services here instead of
grouping its spans in otel_traces (whose (ServiceName, SpanName, time) order scatters a trace over
as many granules as it has spans). Rows are partial (one per trace per inserted block) and merge
by aggregation: readers `GROUP BY TraceId` with min/max/sum, `argMinMerge(Root)` and
`groupUniqArrayArray(Services)`. `LastStart` (the newest span start) lets a reader check that
every span of the trace lies inside the window it would otherwise have grouped.

Version 5 (`apply`) creates the table, fills it from the spans already stored, then creates the
view (see collector/schema/fill.py: an interrupted fill is redone, never added to). In cluster
mode every statement runs ON CLUSTER, which an INSERT cannot: there is no fill, and searches
summarise traces stored before version 5 from their spans (same answer, the old cost).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from collector.schema.ddl import SchemaOptions, TableSpec, ViewSpec, render_table, render_view
from collector.schema.fill import Runner, fill_then_view

__all__ = ["FILL_CHUNK_ROWS", "TABLE", "VIEW", "apply", "statements"]

FILL_CHUNK_ROWS = 2_000_000

TABLE = "meshlens_trace_summaries"
VIEW = "meshlens_trace_summaries_mv"

SPEC = TableSpec(
    name=TABLE,
    columns="""
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime64(9)) CODEC(ZSTD(1)),
    LastStart SimpleAggregateFunction(max, DateTime64(9)) CODEC(ZSTD(1)),
    EndNs SimpleAggregateFunction(max, Int64) CODEC(ZSTD(1)),
    SpanCount SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    ErrorCount SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    Root AggregateFunction(argMin, Tuple(String, String), Tuple(UInt8, DateTime64(9))) CODEC(ZSTD(1)),
    Services SimpleAggregateFunction(groupUniqArrayArray, Array(String)) CODEC(ZSTD(1))
""",  # noqa: E501
    engine="AggregatingMergeTree",
    # Daily like otel_traces, so TTL drops a day's summaries with that day's spans; a small
    # granule because readers look up a few ids.
    keys="PARTITION BY toDate(Start)\nORDER BY (TraceId)",
    ttl_expr="toDateTime(Start)",
    settings="index_granularity = 256, ttl_only_drop_parts = 1",
    sharding_key="cityHash64(TraceId)",
)

# Same definitions as the span-grouping summary in analytics/traces/repository.py.
_SELECT = """
SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS LastStart,
    max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration)) AS EndNs,
    count() AS SpanCount,
    countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR')) AS ErrorCount,
    argMinState((toString(ServiceName), toString(SpanName)), (ParentSpanId != '', Timestamp))
        AS Root,
    groupUniqArray(toString(ServiceName)) AS Services
FROM {source}
WHERE TraceId != ''
"""

VIEW_SPEC = ViewSpec(
    name=VIEW, target=TABLE, source="otel_traces", select=_SELECT + "GROUP BY TraceId"
)


def statements(options: SchemaOptions) -> list[str]:
    """Version 5's DDL: the table, then the view (`apply` fills the table in between)."""
    return [*render_table(SPEC, options), *render_view(VIEW_SPEC, options)]


def fill_sql(options: SchemaOptions) -> str:
    """INSERT ... SELECT of the traces in one otel_traces partition and cityHash64 bucket."""
    select = _SELECT.strip().replace("{source}", options.qualified("otel_traces"))
    return (
        f"INSERT INTO {options.qualified(TABLE)}\n{select}\n"
        "  AND _partition_id = {partition:String}\n"
        "  AND cityHash64(TraceId) % {buckets:UInt64} = {bucket:UInt64}\n"
        "GROUP BY TraceId"
    )


async def apply(
    runner: Runner, options: SchemaOptions, run_ddl: Callable[[str], Awaitable[None]]
) -> None:
    """Bring a store to version 5: table, fill from stored spans (single node), view."""
    if options.cluster:
        for sql in statements(options):
            await run_ddl(sql)
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
