"""The recording side of telemetry that the request-path layers call: ids, sampling, the span
buffer, the metric instruments and the access log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.telemetry.accesslog import AccessLog
from sidecar.telemetry.context import SAMPLED, IdSource
from sidecar.telemetry.grpc_metrics import GrpcMethodMetrics
from sidecar.telemetry.istio import IstioMetrics
from sidecar.telemetry.metrics import Counter
from sidecar.telemetry.otel_metrics import HttpDurations
from sidecar.telemetry.spans import SpanBuffer

__all__ = ["Recorder"]


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

    def root_flags(self, trace_id: bytes) -> int:
        """Trace flags for a trace we start: sampled by the trace id's low bits vs the ratio."""
        if self.sample_ratio >= 1.0:
            return SAMPLED
        low = int.from_bytes(trace_id[8:], "big")
        return SAMPLED if low < self.sample_ratio * 2**64 else 0
