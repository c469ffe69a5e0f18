"""The ClickHouse exporter: writes a sealed batch to the store, table by table, idempotently.

Each table insert carries a dedup token derived from the spool id and the batch's sequence range,
so re-sending a batch after a crash or a timeout never duplicates rows. StoreUnavailable (and
insert timeouts) are retried with capped exponential backoff until the store is back or the
exporter is shut down. A rejected insert is split in halves until the rows the store refuses
are found (bounded); those are dropped and counted, the batch's other rows are written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from collector.metrics import CollectorMetrics
from collector.otlp.columns import Batch, Columns
from collector.store.base import Store, StoreRejected, StoreUnavailable

__all__ = ["Batch", "ClickHouseExporter", "ClickHouseExporterConfig", "Sleep"]

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# rejected inserts one batch may split into halves: a few bad rows cost ~2 log2(rows) inserts
# each; a batch whose every row is bad (a schema mismatch) stops splitting after this many
_SPLITS = 64


def _rows(columns: Columns) -> int:
    return len(next(iter(columns.values()), []))


@dataclass(frozen=True, slots=True)
class ClickHouseExporterConfig:
    """Retry and timeout settings for inserts."""

    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0
    insert_timeout_s: float = 30.0
    failure_log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_initial_s <= self.retry_max_s:
            raise ValueError("need 0 < retry_initial_s <= retry_max_s")
        if self.insert_timeout_s <= 0:
            raise ValueError("insert_timeout_s must be > 0")


class ClickHouseExporter:
    """Writes batches to a Store; `export` returns once every table is written (or rejected)."""

    def __init__(
        self,
        config: ClickHouseExporterConfig,
        store: Store,
        metrics: CollectorMetrics,
        *,
        token_prefix: str,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._token_prefix = token_prefix
        self._sleep = sleep
        self._clock = clock
        self._failing_since: float | None = None
        self._last_failure_log = float("-inf")
        self._suppressed = 0

    def dedup_token(self, batch: Batch, table: str) -> str:
        return f"{self._token_prefix}:{batch.first_seq}-{batch.last_seq}:{table}"

    async def export(self, batch: Batch) -> None:
        """Write every table of `batch`; retries StoreUnavailable until success."""
        for table, columns in batch.tables.items():
            await self._insert_with_retry(batch, table, columns)
        self._metrics.inc("meshlens_collector_batches_total")

    async def _insert_with_retry(self, batch: Batch, table: str, columns: Columns) -> None:
        token = self.dedup_token(batch, table)
        rows = _rows(columns)
        dropped, error = await self._insert_parts(table, columns, token, [_SPLITS])
        if dropped:
            self._metrics.inc("meshlens_collector_dropped_rows_total", dropped, reason="rejected")
            logger.error(
                "store rejected rows of a batch; they are dropped",
                extra={
                    "table": table,
                    "rows": dropped,
                    "of": rows,
                    "token": token,
                    "error": error,
                },
            )

    async def _insert_parts(
        self, table: str, columns: Columns, token: str, splits: list[int]
    ) -> tuple[int, str]:
        """Insert `columns`, retrying while the store is unavailable. A rejected insert of more
        than one row is split in halves, each inserted on its own (tokens derived from the
        batch's, so a replay splits the same way and dedups), so one bad row does not take the
        batch's other rows (other requests') with it; `splits` bounds the extra inserts one
        batch may cost. Returns the rows dropped and the first rejection."""
        rows = _rows(columns)
        delay = self._config.retry_initial_s
        while True:
            try:
                async with asyncio.timeout(self._config.insert_timeout_s):
                    await self._store.insert(table, columns, dedup_token=token)
            except (StoreUnavailable, TimeoutError) as exc:
                self._metrics.inc("meshlens_collector_store_errors_total", kind="unavailable")
                self._note_failure(table, exc)
                await self._sleep(delay)
                delay = min(delay * 2, self._config.retry_max_s)
                continue
            except StoreRejected as exc:
                self._metrics.inc("meshlens_collector_store_errors_total", kind="rejected")
                if rows < 2 or splits[0] <= 0:
                    return rows, str(exc)
                splits[0] -= 1
                half = rows // 2
                dropped, error = 0, str(exc)
                for lo, hi in ((0, half), (half, rows)):
                    part = {name: values[lo:hi] for name, values in columns.items()}
                    lost, why = await self._insert_parts(table, part, f"{token}/{lo}-{hi}", splits)
                    dropped += lost
                    error = why if lost and why else error
                return dropped, error
            self._metrics.inc("meshlens_collector_written_rows_total", rows, table=table)
            self._note_success()
            return 0, ""

    def _note_failure(self, table: str, exc: BaseException) -> None:
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_failure_log < self._config.failure_log_interval_s:
            self._suppressed += 1
            return
        logger.warning(
            "store unavailable; batch kept in the spool and retried",
            extra={
                "table": table,
                "error": str(exc) or type(exc).__name__,
                "suppressed": self._suppressed,
            },
        )
        self._last_failure_log = now
        self._suppressed = 0

    def _note_success(self) -> None:
        if self._failing_since is not None:
            logger.info(
                "store recovered",
                extra={"outage_s": round(self._clock() - self._failing_since, 3)},
            )
            self._failing_since = None
            self._last_failure_log = float("-inf")
            self._suppressed = 0
