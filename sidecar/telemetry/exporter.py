"""Background OTLP export: drains the span buffer in batches (every interval or when a batch is
full) and pushes metrics periodically; owns one task, counts every exported and dropped span.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.stack import Clock, Sleep, monotonic
from sidecar.telemetry.metrics import Counter
from sidecar.telemetry.otlp import TraceEncoder, rejected_spans
from sidecar.telemetry.spans import SpanBuffer
from sidecar.telemetry.transport import RetryPolicy, Transport, send_with_retry

__all__ = ["ExportCounters", "ExporterConfig", "OtlpExporter"]

logger = logging.getLogger(__name__)
_LOG_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    interval_s: float = 1.0
    metrics_interval_s: float = 10.0
    batch_size: int = 512
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.metrics_interval_s <= 0:
            raise ValueError("export intervals must be > 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True, slots=True)
class ExportCounters:
    exported: Counter  # no labels
    dropped: Counter  # (reason,)
    requests: Counter  # (signal, result)


class OtlpExporter:
    """Sends what the SpanBuffer holds to `/v1/traces` and metric snapshots to `/v1/metrics`."""

    def __init__(
        self,
        *,
        transport: Transport,
        buffer: SpanBuffer,
        encoder: TraceEncoder,
        counters: ExportCounters,
        encode_metrics: Callable[[], bytes | None] | None = None,
        config: ExporterConfig = ExporterConfig(),
        clock: Clock = monotonic,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._transport = transport
        self._buffer = buffer
        self._encoder = encoder
        self._counters = counters
        self._encode_metrics = encode_metrics
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_flight = 0
        self._failures = 0
        self._last_log = -_LOG_EVERY_S

    def wake(self) -> None:
        """Ask the loop to export now (the buffer holds a full batch)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="otlp-export")

    async def _run(self) -> None:
        next_metrics = self._clock() + self._config.metrics_interval_s
        while not self._stopping:
            # a full batch is already waiting (more than one came in while the last round
            # posted): send it now, as OTel's batch processor does, not after the interval
            if len(self._buffer) < self._config.batch_size:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._config.interval_s)
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self.flush_spans()
                if self._clock() >= next_metrics:
                    next_metrics = self._clock() + self._config.metrics_interval_s
                    await self.flush_metrics()
            except Exception:
                # The export loop must outlive any one bad batch; the spans of that batch were
                # already counted as dropped (reason export_error) before re-raising here.
                logger.exception("telemetry export iteration failed")

    async def flush_spans(self, give_up_at: float | None = None) -> None:
        """Export the spans buffered now, batch by batch. Those recorded meanwhile wait for the
        next round (a full batch or the interval), as in OTel's batch processor: draining until
        empty would send a post of the few spans recorded during each post, back to back."""
        left = len(self._buffer)
        while left > 0 and len(self._buffer):
            batch = self._buffer.take(min(left, self._config.batch_size))
            left -= len(batch)
            self._in_flight = len(batch)
            try:
                body = self._encoder.encode(batch)
                outcome = await send_with_retry(
                    self._transport,
                    "/v1/traces",
                    body,
                    self._config.retry,
                    sleep=self._sleep,
                    clock=self._clock,
                    rand=self._rand,
                    give_up_at=give_up_at,
                    on_retry=lambda why: self._counters.requests.inc(("traces", "retry")),
                )
            except asyncio.CancelledError:
                self._drop("shutdown", self._in_flight)
                raise
            except Exception:
                self._drop("export_error", self._in_flight)
                raise
            finally:
                self._in_flight = 0
            self._counters.requests.inc(("traces", outcome.result))
            if outcome.result == "ok":
                rejected = _rejected_spans(outcome.body)
                self._counters.exported.inc((), len(batch) - rejected)
                if rejected:
                    self._drop("partial_rejected", rejected)
                self._recovered()
            else:
                reason = "export_rejected" if outcome.result == "rejected" else "export_failed"
                self._drop(reason, len(batch))
                self._failed(outcome.status, outcome.attempts)

    async def flush_metrics(self, give_up_at: float | None = None) -> None:
        """Export one snapshot of the cumulative metrics (nothing if there are none)."""
        body = self._encode_metrics() if self._encode_metrics is not None else None
        if body is None:
            return
        outcome = await send_with_retry(
            self._transport,
            "/v1/metrics",
            body,
            self._config.retry,
            sleep=self._sleep,
            clock=self._clock,
            rand=self._rand,
            give_up_at=give_up_at,
        )
        self._counters.requests.inc(("metrics", outcome.result))

    async def shutdown(self, deadline_s: float = 5.0) -> None:
        """Stop the loop, export what is left within `deadline_s`, count the rest as dropped."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        give_up_at = self._clock() + deadline_s
        try:
            async with asyncio.timeout(deadline_s):
                while len(self._buffer):  # (what the last requests recorded meanwhile too)
                    await self.flush_spans(give_up_at)
                await self.flush_metrics(give_up_at)
        except TimeoutError:
            logger.warning("telemetry export did not finish before the shutdown deadline")
        self._drop("shutdown", len(self._buffer))
        self._buffer.take(len(self._buffer))
        await self._transport.close()

    def _drop(self, reason: str, count: int) -> None:
        if count:
            self._counters.dropped.inc((reason,), count)

    def _failed(self, status: int, attempts: int) -> None:
        self._failures += 1
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            logger.warning(
                "telemetry export failing",
                extra={"status": status, "attempts": attempts, "failures": self._failures},
            )
            self._last_log = now

    def _recovered(self) -> None:
        if self._failures:
            logger.info("telemetry export recovered", extra={"failures": self._failures})
            self._failures = 0


def _rejected_spans(body: bytes) -> int:
    return rejected_spans(body) if body else 0
