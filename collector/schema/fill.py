"""Creating a table fed by a materialized view over otel_traces, filled from the spans stored.

The view is created last, so "the view exists" means "the fill finished": a migration interrupted
before that empties the table and fills it again (never copying a span twice). Spans another
writer inserts during the fill may be missing from the table: migrate before ingest starts (the
collector does), and not from two processes at once. The fill runs per otel_traces partition, in
chunks of at most `chunk_rows` spans (hash buckets), so no statement runs long.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from collector.schema.ddl import SchemaOptions, TableSpec, ViewSpec, render_table, render_view

__all__ = ["Runner", "fill_then_view"]


class Runner(Protocol):
    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    async def query(
        self, sql: str, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]: ...


async def fill_then_view(
    runner: Runner,
    options: SchemaOptions,
    run_ddl: Callable[[str], Awaitable[None]],
    *,
    table: TableSpec,
    view: ViewSpec,
    fill_sql: str,
    chunk_rows: int,
) -> None:
    """CREATE `table`; unless `view` exists: TRUNCATE it and run `fill_sql` (parameters
    {partition:String}, {buckets:UInt64}, {bucket:UInt64}) per chunk; then CREATE `view`."""
    for sql in render_table(table, options):
        await run_ddl(sql)
    exists = await runner.query(
        "SELECT count() AS n FROM system.tables WHERE database = {db:String} AND name = {v:String}",
        {"db": options.database, "v": view.name},
    )
    if int(exists[0]["n"]) == 0:
        await runner.command(f"TRUNCATE TABLE {options.qualified(options.local_name(table.name))}")
        parts = await runner.query(
            "SELECT partition_id AS id, toInt64(sum(rows)) AS n FROM system.parts"
            " WHERE database = {db:String} AND table = {t:String} AND active"
            " GROUP BY partition_id ORDER BY partition_id",
            {"db": options.database, "t": options.local_name(view.source)},
        )
        for part in parts:
            buckets = max(1, math.ceil(int(part["n"]) / chunk_rows))
            for bucket in range(buckets):
                params = {"partition": part["id"], "buckets": buckets, "bucket": bucket}
                await runner.command(fill_sql, params)
    for sql in render_view(view, options):
        await run_ddl(sql)
