"""The insertable columns of each table, read once from system.columns (both store backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from collector.store.base import Rows, StoreRejected

__all__ = ["ColumnTypes"]

_COLUMNS_SQL = (
    "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {table:String}"
    " AND default_kind NOT IN ('ALIAS', 'MATERIALIZED', 'EPHEMERAL') ORDER BY position"
)

Query = Callable[[str, Mapping[str, Any]], Awaitable[Rows]]


class ColumnTypes:
    """Column name -> ClickHouse type per table, cached until `forget` (after DDL or a failure)."""

    def __init__(self, query: Query, database: str, where: str) -> None:
        self._query = query
        self._database = database
        self._where = where  # the store URL (redacted), for error messages
        self._types: dict[str, dict[str, str]] = {}

    async def of(self, table: str) -> dict[str, str]:
        types = self._types.get(table)
        if types is None:
            rows = await self._query(_COLUMNS_SQL, {"db": self._database, "table": table})
            types = {row["name"]: row["type"] for row in rows}
            if not types:
                raise StoreRejected(f"insert into {table}: no such table in {self._where}")
            self._types[table] = types
        return types

    def forget(self, table: str | None = None) -> None:
        """Drop one table's cached types (it may have changed), or every table's."""
        if table is None:
            self._types.clear()
        else:
            self._types.pop(table, None)
