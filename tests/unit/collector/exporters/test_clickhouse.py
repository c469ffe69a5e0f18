from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from collector.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig
from collector.metrics import CollectorMetrics
from collector.otlp.columns import Batch
from tests.unit.collector.helpers import MemoryStore


class HangingOnceStore(MemoryStore):
    """Hangs on the first insert (like a stuck connection), then behaves."""

    def __init__(self) -> None:
        super().__init__()
        self.hung = False

    async def insert(
        self, table: str, columns: Mapping[str, Sequence[Any]], *, dedup_token: str | None = None
    ) -> int:
        if not self.hung:
            self.hung = True
            await asyncio.sleep(3600)
        return await super().insert(table, columns, dedup_token=dedup_token)


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


async def test_a_stuck_insert_times_out_and_is_retried_with_the_same_token() -> None:
    store = HangingOnceStore()
    metrics = CollectorMetrics()
    exporter = ClickHouseExporter(
        ClickHouseExporterConfig(insert_timeout_s=0.01),
        store,
        metrics,
        token_prefix="spool1",
        sleep=_no_sleep,
    )
    batch = Batch(4, 7, {"t1": {"a": [1, 2]}, "t2": {"b": ["x"]}})

    await exporter.export(batch)

    assert store.inserts == [("t1", "spool1:4-7:t1", 2), ("t2", "spool1:4-7:t2", 1)]
    assert metrics.value("meshlens_collector_store_errors_total", kind="unavailable") == 1
    assert metrics.value("meshlens_collector_written_rows_total", table="t1") == 2


def test_config_and_batch_validate() -> None:
    with pytest.raises(ValueError):
        ClickHouseExporterConfig(retry_initial_s=5, retry_max_s=1)
    with pytest.raises(ValueError, match="empty sequence range"):
        Batch(3, 2, {})
