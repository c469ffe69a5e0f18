"""The recording side of telemetry that the request-path layers call: ids, sampling, the span
buffer, the metric instruments and the access log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar._native import mypyc_attr
from sidecar.telemetry.accesslog import AccessLog
from sidecar.telemetry.context import SAMPLED, IdSource
from sidecar.telemetry.grpc_metrics import GrpcMethodMetrics
from sidecar.telemetry.istio import IstioMetrics
from sidecar.telemetry.metrics import Counter
from sidecar.telemetry.otel_metrics import HttpDurations
from sidecar.telemetry.spans import SpanBuffer

__all__ = ["Deferred", "Recorder"]

_log = logging.getLogger(__name__)


@mypyc_attr(allow_interpreted_subclasses=True)  # (tests record their own kinds)
class Deferred:
    """One exchange's telemetry to record later (Recorder.later); its kinds are in
    sidecar/telemetry/exchange.py."""

    __slots__ = ()

    def record(self, rec: Recorder) -> None:
        raise NotImplementedError


@dataclass(slots=True)
class Recorder:
    """Everything the telemetry layers write to; built once by `Telemetry`."""

    service: str
    ids: IdSource
    spans: SpanBuffer
    istio_outbound: IstioMetrics
    istio_inbound: IstioMetrics
    durations: HttpDurations
    retries: Counter  # (upstream, reason)
    budget_exhausted: Counter  # (upstream,)
    ejections: Counter  # (upstream,)
    decisions: Counter  # (upstream, decision)
    unsampled: Counter  # (direction,)
    access_log: AccessLog | None = None
    grpc: GrpcMethodMetrics | None = None  # per-method gRPC metrics
    sample_ratio: float = 1.0
    now_ns: Callable[[], int] = time.time_ns
    # the loop `later` defers to (Telemetry.start: defer_to; None: record at once)
    loop: asyncio.AbstractEventLoop | None = None
    pending: list[Deferred] = field(default_factory=list)
    _flush: Callable[[], None] = field(init=False, repr=False)  # (self.flush, bound once)

    def __post_init__(self) -> None:
        self._flush = self.flush

    def defer_to(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Record exchanges after their responses are written, in `loop` (None: at once)."""
        self.flush()
        self.loop = loop

    def later(self, entry: Deferred) -> None:
        """Record `entry` once the response now being returned is on its way: in the
        loop's next round of callbacks, after the task that returns it has written it (the
        telemetry of an exchange is off the time its caller waits). Everything that reads
        telemetry calls `flush` first; in the order deferred; at once without a loop."""
        loop = self.loop
        if loop is None:
            entry.record(self)
            return
        pending = self.pending
        pending.append(entry)
        if len(pending) == 1:
            try:
                loop.call_soon(self._flush)
            except RuntimeError:  # (the loop is closed)
                self.flush()

    def flush(self) -> None:
        """Record everything deferred by `later` now."""
        while self.pending:
            batch = self.pending
            self.pending = []
            for entry in batch:
                try:
                    entry.record(self)
                except Exception:  # (one exchange's telemetry must not lose the others')
                    _log.exception("recording an exchange's telemetry failed")

    def root_flags(self, trace_id: bytes) -> int:
        """Trace flags for a trace we start: sampled by the trace id's low bits vs the ratio."""
        if self.sample_ratio >= 1.0:
            return SAMPLED
        low = int.from_bytes(trace_id[8:], "big")
        return SAMPLED if low < self.sample_ratio * 2**64 else 0
