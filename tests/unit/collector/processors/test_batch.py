from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig
from collector.metrics import CollectorMetrics
from collector.otlp.columns import Signal
from collector.otlp.decode import decode_protobuf
from collector.otlp.errors import Overloaded
from collector.processors.batch import BatchConfig, DurableBatchProcessor
from collector.spool import Spool, SpoolConfig
from tests.unit.collector.helpers import MemoryStore, trace_request


class Harness:
    """A processor over a real spool in tmp_path, exporting to a MemoryStore."""

    def __init__(
        self,
        tmp_path: Path,
        store: MemoryStore,
        clock: Callable[[], float] = time.monotonic,
        **batch: float,
    ) -> None:
        self.store = store
        self.metrics = CollectorMetrics()
        self.spool = Spool.open(SpoolConfig(tmp_path / "spool", segment_bytes=8192))
        self.sleeps: list[float] = []
        self.exporter = ClickHouseExporter(
            ClickHouseExporterConfig(retry_initial_s=0.5, retry_max_s=2.0),
            store,
            self.metrics,
            token_prefix=self.spool.spool_id,
            sleep=self._sleep,
        )
        config = BatchConfig(
            max_rows=int(batch.get("max_rows", 10)),
            max_age_s=batch.get("max_age_s", 60.0),
            max_memory_rows=int(batch.get("max_memory_rows", 1000)),
            shutdown_timeout_s=batch.get("shutdown_timeout_s", 10.0),
        )
        self.processor = DurableBatchProcessor(
            config, self.spool, self.exporter, self.metrics, sleep=self._sleep, clock=clock
        )
        self.on_sleep: list[asyncio.Event] = []

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    async def send(self, spans: int) -> list[str]:
        request = trace_request(spans)
        payload = request.SerializeToString()
        await self.processor.consume(payload, decode_protobuf(Signal.TRACES, payload))
        return [s.span_id.hex() for s in request.resource_spans[0].scope_spans[0].spans]

    def span_ids(self) -> list[str]:
        return [row["SpanId"] for row in self.store.tables.get("otel_traces", [])]


async def _until(condition: object, limit: int = 2000) -> None:
    for _ in range(limit):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def test_full_batches_go_out_with_tokens_named_by_sequence_range(tmp_path: Path) -> None:
    h = Harness(tmp_path, MemoryStore(), max_rows=10)
    await h.processor.start()
    sent = await h.send(5) + await h.send(5)
    await _until(lambda: len(h.store.inserts) == 1)
    sent += await h.send(3)
    await h.processor.shutdown()  # flushes the partial batch

    prefix = h.spool.spool_id
    assert [(t, token) for t, token, _ in h.store.inserts] == [
        ("otel_traces", f"{prefix}:1-2:otel_traces"),
        ("otel_traces", f"{prefix}:3-3:otel_traces"),
    ]
    assert h.span_ids() == sent
    assert h.processor.exported_upto == 3


async def test_an_old_partial_batch_is_sealed_by_age(tmp_path: Path) -> None:
    h = Harness(tmp_path, MemoryStore(), max_rows=1000, max_age_s=0.01)
    await h.processor.start()
    sent = await h.send(2)
    await _until(lambda: len(h.span_ids()) == 2)
    assert h.span_ids() == sent
    await h.processor.shutdown()


async def test_store_outage_is_retried_with_capped_backoff_then_written_once(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    store.unavailable = True
    h = Harness(tmp_path, store, max_rows=4)
    await h.processor.start()
    sent = await h.send(4) + await h.send(4)  # both answered while the store is down
    await _until(lambda: store.failed_calls >= 5)
    store.unavailable = False
    await h.processor.shutdown()

    assert sorted(h.span_ids()) == sorted(sent)
    assert h.sleeps[:4] == [0.5, 1.0, 2.0, 2.0]
    assert h.metrics.value("meshlens_collector_store_errors_total", kind="unavailable") >= 5


async def test_restart_replays_the_inflight_batch_with_its_token_and_no_duplicates(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    first = Harness(tmp_path, store, max_rows=10)
    await first.processor.start()
    sent = await first.send(10)
    await _until(lambda: first.processor.exported_upto == 1)
    sent += await first.send(3)
    # Crash: the next batch was marked in flight and inserted, but never checkpointed.
    await first.spool.begin_batch(2, 2)
    first.processor._task.cancel()  # type: ignore[union-attr]
    await asyncio.sleep(0)
    await first.spool.close()
    payload = first.spool.read(2, 1 << 20)[0].payload
    token = f"{first.spool.spool_id}:2-2:otel_traces"
    await store.insert(
        "otel_traces",
        decode_protobuf(Signal.TRACES, payload).tables["otel_traces"],
        dedup_token=token,
    )

    second = Harness(tmp_path, store, max_rows=10)
    await second.processor.start()
    await second.processor.shutdown()

    assert sorted(second.span_ids()) == sorted(sent)
    assert store.inserts[-1] == ("otel_traces", token, 3)  # replayed, deduplicated


async def test_records_over_the_memory_bound_are_reread_from_the_spool(tmp_path: Path) -> None:
    store = MemoryStore()
    store.unavailable = True
    h = Harness(tmp_path, store, max_rows=4, max_memory_rows=5)
    await h.processor.start()
    sent = [span for _ in range(4) for span in await h.send(4)]
    store.unavailable = False
    await h.processor.shutdown()

    # The first batch blocks on the store; at most one more 4-row record fits in memory.
    assert h.metrics.value("meshlens_collector_spilled_records_total") >= 2
    assert sorted(h.span_ids()) == sorted(sent)


async def test_rejected_rows_are_dropped_counted_and_checkpointed(tmp_path: Path) -> None:
    store = MemoryStore()
    store.reject_tables.add("otel_traces")
    h = Harness(tmp_path, store)
    await h.processor.start()
    await h.send(3)
    await h.processor.shutdown()

    assert h.metrics.value("meshlens_collector_dropped_rows_total", reason="rejected") == 3
    assert h.processor.exported_upto == 1


async def test_shutdown_gives_up_after_its_timeout_and_keeps_the_records(tmp_path: Path) -> None:
    store = MemoryStore()
    store.unavailable = True
    h = Harness(tmp_path, store, shutdown_timeout_s=0.05)
    await h.processor.start()
    await h.send(2)
    await h.processor.shutdown()

    assert h.processor.exported_upto == 0
    reopened = Spool.open(SpoolConfig(tmp_path / "spool", segment_bytes=8192))
    assert reopened.last_seq == 1 and reopened.done_upto == 0
    with pytest.raises(Overloaded, match="shutting down"):
        await h.send(1)


class BrokenOnceStore(MemoryStore):
    """Raises an unexpected (non-store) error on the first insert."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    async def insert(self, table: str, columns: Any, *, dedup_token: str | None = None) -> int:
        if self.broken:
            self.broken = False
            raise RuntimeError("bug in a lower layer (test)")
        return await super().insert(table, columns, dedup_token=dedup_token)


async def test_an_unexpected_export_error_pauses_and_resumes_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    store = BrokenOnceStore()
    h = Harness(tmp_path, store, max_rows=5)
    await h.processor.start()
    sent = await h.send(5) + await h.send(5)
    await _until(lambda: len(h.span_ids()) == 10)
    await h.processor.shutdown()

    assert h.span_ids() == sent
    assert h.metrics.value("meshlens_collector_store_errors_total", kind="internal") == 1
    assert h.sleeps == [1.0]
    # The failed batch was retried under the same token it was first tried with.
    assert store.inserts[0][1] == f"{h.spool.spool_id}:1-1:otel_traces"


async def test_batch_age_counts_from_arrival_not_from_when_the_batcher_got_to_it(
    tmp_path: Path,
) -> None:
    now = [0.0]
    store = MemoryStore()
    store.unavailable = True
    h = Harness(tmp_path, store, clock=lambda: now[0], max_rows=4, max_age_s=60.0)
    await h.processor.start()
    await h.send(4)  # a full batch, stuck on the store
    await _until(lambda: store.failed_calls >= 1)
    sent = await h.send(1)  # arrives at t=0 while the batcher is busy
    now[0] = 61.0
    store.unavailable = False
    # Already older than max_age when the batcher reaches it: written without waiting 60 s.
    await _until(lambda: sent[0] in h.span_ids())
    await h.processor.shutdown()
