"""The `meshlens_incidents` table (created idempotently) and its reads and writes.

One row per incident version: ReplacingMergeTree keeps the latest `updated_at` per id, so the
continuous analysis re-writes an incident as it grows; reads use FINAL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from collector.store import Rows, Store

__all__ = ["TABLE", "IncidentRepository"]

TABLE = "meshlens_incidents"

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id String,
    start DateTime64(3, 'UTC'),
    end DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    summary String,
    services Array(LowCardinality(String)),
    anomalies String,
    root_causes String
) ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(start)
ORDER BY id
"""

_COLUMNS = (
    "id, toUnixTimestamp64Milli(start) AS start_ms, toUnixTimestamp64Milli(end) AS end_ms, "
    "toUnixTimestamp64Milli(updated_at) AS updated_ms, summary, services, anomalies, root_causes"
)

_LIST = f"""
SELECT {_COLUMNS} FROM {TABLE} FINAL
WHERE start < {{to:DateTime64(3)}} AND end >= {{from:DateTime64(3)}}
ORDER BY start DESC, id
LIMIT {{limit:UInt32}}
"""

_ONE = f"SELECT {_COLUMNS} FROM {TABLE} FINAL WHERE id = {{id:String}}"


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["anomalies"] = json.loads(row["anomalies"])
    out["root_causes"] = json.loads(row["root_causes"])
    return out


class IncidentRepository:
    """Incidents in one store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def ensure_table(self) -> None:
        await self._store.command(_DDL)

    async def upsert(self, records: Sequence[dict[str, Any]], updated_at: datetime) -> None:
        """Write incident records (as `AnalyzedIncident.record()` returns them)."""
        if not records:
            return
        await self._store.insert(
            TABLE,
            {
                "id": [r["id"] for r in records],
                "start": [r["start"] for r in records],
                "end": [r["end"] for r in records],
                "updated_at": [updated_at] * len(records),
                "summary": [r["summary"] for r in records],
                "services": [list(r["services"]) for r in records],
                "anomalies": [json.dumps(r["anomalies"], default=str) for r in records],
                "root_causes": [json.dumps(r["root_causes"], default=str) for r in records],
            },
        )

    async def list(self, start: datetime, end: datetime, *, limit: int = 200) -> Rows:
        rows = await self._store.query(_LIST, {"from": start, "to": end, "limit": limit})
        return [_decode(r) for r in rows]

    async def get(self, incident_id: str) -> dict[str, Any] | None:
        rows = await self._store.query(_ONE, {"id": incident_id})
        return _decode(rows[0]) if rows else None
