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


def _exporter(store: MemoryStore, metrics: CollectorMetrics) -> ClickHouseExporter:
    return ClickHouseExporter(
        ClickHouseExporterConfig(), store, metrics, token_prefix="spool1", sleep=_no_sleep
    )


async def test_a_rejected_row_is_dropped_alone_not_with_the_rest_of_its_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # (one span from 2300 made the real store refuse a batch of ten requests' spans, all lost)
    store, metrics = MemoryStore(), CollectorMetrics()
    store.reject_row = lambda row: row["a"] == 7
    batch = Batch(1, 10, {"t": {"a": list(range(10)), "b": [f"r{i}" for i in range(10)]}})

    await _exporter(store, metrics).export(batch)

    assert [row["a"] for row in store.tables["t"]] == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert metrics.value("meshlens_collector_dropped_rows_total", reason="rejected") == 1
    assert metrics.value("meshlens_collector_written_rows_total", table="t") == 9
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and (errors[0].rows, errors[0].of) == (1, 10)  # type: ignore[attr-defined]

    # a replay of the batch (after a crash) splits the same way: the parts dedup, no duplicates
    await _exporter(store, CollectorMetrics()).export(batch)
    assert len(store.tables["t"]) == 9


async def test_a_batch_whose_every_row_is_refused_stops_splitting() -> None:
    store, metrics = MemoryStore(), CollectorMetrics()
    store.reject_row = lambda row: True
    batch = Batch(1, 1, {"t": {"a": list(range(1000))}})

    await _exporter(store, metrics).export(batch)

    assert "t" not in store.tables
    assert metrics.value("meshlens_collector_dropped_rows_total", reason="rejected") == 1000
    # the first insert, 64 splits of two halves each: 129 tries, not one per row
    assert metrics.value("meshlens_collector_store_errors_total", kind="rejected") == 129
