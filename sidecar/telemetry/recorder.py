"""The recording side of telemetry that the request-path layers call: ids, sampling, the span
buffer, the metric instruments, the access log, and the set of responses still streaming.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.telemetry.accesslog import AccessLog
from sidecar.telemetry.context import SAMPLED, IdSource
from sidecar.telemetry.istio import IstioMetrics
from sidecar.telemetry.metrics import Counter
from sidecar.telemetry.otel_metrics import HttpDurations
from sidecar.telemetry.spans import SpanBuffer

__all__ = ["Recorder", "StreamWatch"]


class StreamWatch:
    """Responses whose body is still streaming, so spans of abandoned bodies still end.

    A body that the downstream stops reading (client went away, a retried response nobody
    drained) would otherwise keep its span open forever; `sweep` ends those past a max age.
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[int, tuple[int, Callable[[str], None]]] = {}

    def add(self, key: int, started_ns: int, abandon: Callable[[str], None]) -> None:
        self._open[key] = (started_ns, abandon)

    def discard(self, key: int) -> None:
        self._open.pop(key, None)

    def __len__(self) -> int:
        return len(self._open)

    def sweep(self, now_ns: int, max_age_s: float) -> int:
        """End every body open longer than `max_age_s` (error.type body_abandoned)."""
        limit = now_ns - int(max_age_s * 1e9)
        stale = [key for key, (started, _) in self._open.items() if started < limit]
        for key in stale:
            entry = self._open.pop(key, None)
            if entry is not None:
                entry[1]("body_abandoned")
        return len(stale)


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
    unsampled: Counter  # (direction,)
    streams: StreamWatch
    access_log: AccessLog | None = None
    sample_ratio: float = 1.0
    now_ns: Callable[[], int] = time.time_ns

    def root_flags(self, trace_id: bytes) -> int:
        """Trace flags for a trace we start: sampled by the trace id's low bits vs the ratio."""
        if self.sample_ratio >= 1.0:
            return SAMPLED
        low = int.from_bytes(trace_id[8:], "big")
        return SAMPLED if low < self.sample_ratio * 2**64 else 0
