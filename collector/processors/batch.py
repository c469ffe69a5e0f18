"""The durable batch processor: spools each accepted request, then batches spooled records by
size and age into the exporter, checkpointing only what the store accepted.

Records are exported strictly in sequence order as contiguous ranges, so a batch is fully named
by (first_seq, last_seq). The range is written to the checkpoint before the insert, so a replay
after a crash re-sends the same range (same dedup tokens) before batching anything new. Decoded
rows stay in memory up to `max_memory_rows`; past that, records are re-read from the spool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from collector.metrics import CollectorMetrics
from collector.otlp.columns import Batch, DecodedBatch, Signal, merge_tables
from collector.otlp.decode import decode_protobuf
from collector.otlp.errors import InvalidRequest, Overloaded
from collector.spool import Record, Spool

__all__ = ["BatchConfig", "BatchExporter", "DurableBatchProcessor"]

logger = logging.getLogger(__name__)


class BatchExporter(Protocol):
    """The next stage: writes a batch (returns when done, retrying internally)."""

    async def export(self, batch: Batch) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """When to seal a batch and how much decoded data to hold in memory."""

    max_rows: int = 20_000
    max_age_s: float = 0.5
    max_memory_rows: int = 400_000
    read_chunk_bytes: int = 8 * 1024 * 1024
    shutdown_timeout_s: float = 10.0
    error_pause_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_memory_rows < 1:
            raise ValueError("max_rows and max_memory_rows must be >= 1")
        if self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {self.max_age_s}")


class DurableBatchProcessor:
    """`consume()` spools a request and returns when it is durable; a task feeds the exporter."""

    def __init__(
        self,
        config: BatchConfig,
        spool: Spool,
        next_stage: BatchExporter,
        metrics: CollectorMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = config
        self._sleep = sleep
        self._spool = spool
        self._next = next_stage
        self._metrics = metrics
        self._clock = clock
        # seq -> (rows, arrival time); records read back from disk count as already due.
        self._memory: dict[int, tuple[DecodedBatch, float]] = {}
        self._memory_rows = 0
        self._next_seq = spool.done_upto + 1
        self._wake = asyncio.Event()
        self._stopping = False
        self._accepting = True
        self._task: asyncio.Task[None] | None = None
        spool.add_listener(lambda _seq: self._wake.set())
        metrics.gauge("meshlens_collector_queue_rows", lambda: self._memory_rows)
        metrics.gauge(
            "meshlens_collector_spool_pending_records",
            lambda: spool.last_seq - spool.done_upto,
        )
        metrics.gauge("meshlens_collector_spool_size_bytes", lambda: spool.size_bytes)

    @property
    def exported_upto(self) -> int:
        """Highest sequence number the store has confirmed."""
        return self._spool.done_upto

    async def start(self) -> None:
        await self._spool.start()
        self._task = asyncio.create_task(self._run(), name="batch-processor")

    async def consume(self, payload: bytes, decoded: DecodedBatch) -> None:
        """Spool one request; returns once it is on disk (then it will reach the store)."""
        if not self._accepting:
            raise Overloaded("collector is shutting down", retry_after_s=2)
        seq = self._spool.append(int(decoded.signal), payload)
        if self._memory_rows + decoded.rows <= self._config.max_memory_rows:
            self._memory[seq] = (decoded, self._clock())
            self._memory_rows += decoded.rows
        else:
            self._metrics.inc("meshlens_collector_spilled_records_total")
        await self._spool.wait_synced(seq)

    async def shutdown(self) -> None:
        """Stop accepting, flush the spool (at most shutdown_timeout_s), close the spool."""
        self._accepting = False
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(self._config.shutdown_timeout_s):
                    await asyncio.shield(self._task)
            except TimeoutError:
                logger.warning(
                    "shutdown flush timed out; unsent records stay in the spool for next start",
                    extra={"pending": self._spool.last_seq - self._spool.done_upto},
                )
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
            self._task = None
        await self._spool.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._export_loop()
                return
            except Exception:
                # Task boundary: an unexpected failure must not stop exporting for good. The
                # spool still holds everything; resume from the checkpoint after a pause.
                logger.exception("batch export failed unexpectedly; resuming from the checkpoint")
                self._metrics.inc("meshlens_collector_store_errors_total", kind="internal")
                await self._sleep(self._config.error_pause_s)

    async def _export_loop(self) -> None:
        if self._spool.inflight is not None:
            first, last = self._spool.inflight
            logger.info(
                "replaying the batch in flight at the last stop", extra={"seqs": [first, last]}
            )
            parts = await self._take_range(first, last)
            await self._write(first, last, parts)
        self._next_seq = self._spool.done_upto + 1
        while True:
            first = self._next_seq
            parts, last = await self._collect()
            if last < first:
                return  # stopping and nothing left
            await self._write(first, last, parts)

    async def _collect(self) -> tuple[list[DecodedBatch], int]:
        """Gather synced records until the batch is full or old enough (or we are stopping)."""
        parts: list[DecodedBatch] = []
        rows = 0
        started: float | None = None  # arrival of the oldest record in the batch
        while True:
            while self._next_seq <= self._spool.synced_seq and rows < self._config.max_rows:
                for decoded, arrival in await self._take(self._next_seq):
                    parts.append(decoded)
                    rows += decoded.rows
                    started = arrival if started is None else min(started, arrival)
            last = self._next_seq - 1
            if rows >= self._config.max_rows or self._stopping:
                return parts, last
            timeout = None
            if started is not None:
                timeout = started + self._config.max_age_s - self._clock()
                if timeout <= 0:
                    return parts, last
            self._wake.clear()
            if self._next_seq <= self._spool.synced_seq:
                continue
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _take(self, seq: int) -> list[tuple[DecodedBatch, float]]:
        """Rows (and arrival) of record `seq` and following (a chunk when read from disk)."""
        entry = self._memory.pop(seq, None)
        if entry is not None:
            self._memory_rows -= entry[0].rows
            self._next_seq = seq + 1
            return [entry]
        records = await asyncio.to_thread(self._spool.read, seq, self._config.read_chunk_bytes)
        out: list[tuple[DecodedBatch, float]] = []
        for record in records:
            out.extend(self._from_record(record))
            self._next_seq = record.seq + 1
        if not records:
            raise RuntimeError(f"spool record {seq} is missing")
        return out

    async def _take_range(self, first: int, last: int) -> list[DecodedBatch]:
        self._next_seq = first
        parts: list[DecodedBatch] = []
        while self._next_seq <= last:
            records = await asyncio.to_thread(
                self._spool.read, self._next_seq, self._config.read_chunk_bytes
            )
            if not records:
                raise RuntimeError(f"spool record {self._next_seq} is missing")
            for record in records:
                if record.seq > last:
                    break
                parts.extend(decoded for decoded, _ in self._from_record(record))
                self._next_seq = record.seq + 1
        return parts

    def _from_record(self, record: Record) -> list[tuple[DecodedBatch, float]]:
        entry = self._memory.pop(record.seq, None)
        if entry is not None:
            self._memory_rows -= entry[0].rows
            return [entry]
        try:
            return [(decode_protobuf(Signal(record.tag), record.payload), float("-inf"))]
        except (InvalidRequest, ValueError) as exc:
            # Only corruption that passed the CRC can land here; keep going without it.
            logger.error(
                "undecodable spool record skipped", extra={"seq": record.seq, "error": str(exc)}
            )
            self._metrics.inc("meshlens_collector_dropped_rows_total", reason="corrupt")
            return []

    async def _write(self, first: int, last: int, parts: list[DecodedBatch]) -> None:
        tables = merge_tables([part.tables for part in parts if part.tables])
        if tables:
            await self._spool.begin_batch(first, last)
            await self._next.export(Batch(first, last, tables))
        await self._spool.commit_batch(last)
