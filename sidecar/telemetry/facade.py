"""The one telemetry object a sidecar builds: layers for its stacks, /metrics text, OTLP export.

telemetry = Telemetry(TelemetryConfig(service="orders", collector_url="http://127.0.0.1:4318"))
await telemetry.start()
outer = [telemetry.outbound_layer()]; per_attempt = [telemetry.attempt_layer()]
...
await telemetry.shutdown()
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.http import AttrValue
from sidecar.layers.telemetry import attempt_layer, inbound_layer, outbound_layer
from sidecar.stack import Clock, Layer, Sleep, monotonic
from sidecar.telemetry.accesslog import AccessLog
from sidecar.telemetry.context import IdSource
from sidecar.telemetry.exporter import ExportCounters, ExporterConfig, OtlpExporter
from sidecar.telemetry.grpc_metrics import GrpcMethodMetrics
from sidecar.telemetry.istio import IstioMetrics, IstioPair, IstioWorkload
from sidecar.telemetry.metrics import CONTENT_TYPE, Registry
from sidecar.telemetry.otel_metrics import HttpDurations
from sidecar.telemetry.otlp import TraceEncoder
from sidecar.telemetry.recorder import Recorder
from sidecar.telemetry.spans import SpanBuffer
from sidecar.telemetry.transport import COMPRESSIONS, HttpTransport, RetryPolicy, Transport

__all__ = ["PROMETHEUS_CONTENT_TYPE", "Telemetry", "TelemetryConfig"]

logger = logging.getLogger(__name__)
PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE
_VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """What to record and where to send it; `collector_url` None keeps spans local (dropped)."""

    service: str
    instance: str = ""  # default: hostname-pid
    namespace: str = "default"
    workload: str = ""  # default: the service name
    principal: str = ""  # our SPIFFE id when mTLS is on
    collector_url: str | None = None  # OTLP/HTTP base URL, e.g. http://127.0.0.1:4318
    otlp_compression: str = "none"  # or gzip (the OTel SDKs' default is none too)
    sample_ratio: float = 1.0  # for traces this sidecar starts; callers' decisions are kept
    max_queue_spans: int = 4096  # ~0.8 KB each: a stalled collector costs at most ~3 MB
    batch_size: int = 512
    export_interval_s: float = 1.0
    metrics_interval_s: float = 10.0
    export_timeout_s: float = 10.0
    max_series: int = 2000
    access_log: str | None = None  # "-" for stdout or a file path; None = off
    resource_attributes: tuple[tuple[str, str], ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        problems = []
        if not self.service:
            problems.append("service must not be empty")
        if not 0.0 <= self.sample_ratio <= 1.0:
            problems.append(f"sample_ratio must be in [0, 1], got {self.sample_ratio}")
        if self.max_queue_spans < 1 or self.batch_size < 1 or self.max_series < 1:
            problems.append("max_queue_spans, batch_size and max_series must be >= 1")
        if min(self.export_interval_s, self.metrics_interval_s, self.export_timeout_s) <= 0:
            problems.append("intervals and timeouts must be > 0")
        if self.collector_url is not None and not self.collector_url.startswith(
            ("http://", "https://")
        ):
            problems.append(f"collector_url must be http(s)://host:port, got {self.collector_url}")
        if self.otlp_compression not in COMPRESSIONS:
            problems.append(f"otlp_compression must be none or gzip, got {self.otlp_compression!r}")
        if problems:
            raise ValueError("; ".join(problems))


class Telemetry:
    """Spans, metrics and access log of one sidecar, and the tasks that export them."""

    def __init__(
        self,
        config: TelemetryConfig,
        *,
        transport: Transport | None = None,
        clock: Clock = monotonic,
        sleep: Sleep = asyncio.sleep,
        now_ns: Callable[[], int] = time.time_ns,
        ids: IdSource | None = None,
    ) -> None:
        self.config = config
        instance = config.instance or f"{socket.gethostname()}-{os.getpid()}"
        self.resource: tuple[tuple[str, AttrValue], ...] = (
            ("service.name", config.service),
            ("service.namespace", config.namespace),
            ("service.instance.id", instance),
            ("service.version", _VERSION),
            ("telemetry.sdk.name", "meshlens"),
            ("telemetry.sdk.language", "python"),
            ("meshlens.workload", config.workload or config.service),
            *config.resource_attributes,
        )
        self._now_ns = now_ns
        self.registry = registry = Registry(config.max_series)
        workload = IstioWorkload(
            config.service, config.workload, config.namespace, config.principal
        )
        cap, overflow = config.max_series, registry.count_overflow
        istio_out = IstioMetrics(workload, outbound=True, max_series=cap, on_overflow=overflow)
        istio_in = IstioMetrics(workload, outbound=False, max_series=cap, on_overflow=overflow)
        registry.register(IstioPair(istio_out, istio_in))
        self.grpc_metrics = GrpcMethodMetrics(registry)
        self.spans_exported = registry.counter(
            "meshlens_sidecar_spans_exported_total", "Spans the collector accepted."
        )
        self.spans_dropped = registry.counter(
            "meshlens_sidecar_spans_dropped_total", "Spans lost, by reason.", ("reason",)
        )
        self.export_requests = registry.counter(
            "meshlens_sidecar_export_requests_total",
            "OTLP export requests, by signal and result.",
            ("signal", "result"),
        )
        self.config_info = registry.gauge(
            "meshlens_sidecar_config_info", "The active config version (value 1).", ("version",)
        )
        self._exporter: OtlpExporter | None = None
        buffer = SpanBuffer(
            config.max_queue_spans,
            config.batch_size,
            on_drop=lambda reason, n: self.spans_dropped.inc((reason,), n),
            on_batch_ready=self._batch_ready,
        )
        self.recorder = Recorder(
            service=config.service,
            ids=ids or IdSource(),
            spans=buffer,
            istio_outbound=istio_out,
            istio_inbound=istio_in,
            durations=HttpDurations(start_ns=now_ns(), max_series=cap, on_overflow=overflow),
            retries=registry.counter(
                "meshlens_sidecar_retries_total",
                "Retry attempts sent, by upstream and reason.",
                ("upstream", "reason"),
            ),
            budget_exhausted=registry.counter(
                "meshlens_sidecar_retry_budget_exhausted_total",
                "Requests failed because the retry budget was spent.",
                ("upstream",),
            ),
            ejections=registry.counter(
                "meshlens_sidecar_outlier_ejections_total",
                "Endpoint ejections by outlier detection, by upstream.",
                ("upstream",),
            ),
            decisions=registry.counter(
                "meshlens_sidecar_policy_decisions_total",
                "Requests on which a policy acted or would have acted (observe-only).",
                ("upstream", "decision"),
            ),
            unsampled=registry.counter(
                "meshlens_sidecar_requests_unsampled_total",
                "Requests measured without a span (trace not sampled).",
                ("direction",),
            ),
            access_log=AccessLog.open(config.access_log) if config.access_log else None,
            grpc=self.grpc_metrics,
            sample_ratio=config.sample_ratio,
            now_ns=now_ns,
        )
        if transport is None and config.collector_url is not None:
            transport = HttpTransport(
                config.collector_url,
                timeout_s=config.export_timeout_s,
                compression=config.otlp_compression,
            )
        if transport is not None:
            self._exporter = OtlpExporter(
                transport=transport,
                buffer=buffer,
                encoder=TraceEncoder(self.resource, scope_version=_VERSION),
                counters=ExportCounters(
                    self.spans_exported, self.spans_dropped, self.export_requests
                ),
                encode_metrics=self._encode_metrics,
                config=ExporterConfig(
                    config.export_interval_s,
                    config.metrics_interval_s,
                    config.batch_size,
                    config.retry,
                ),
                clock=clock,
                sleep=sleep,
            )
        self._housekeeping: asyncio.Task[None] | None = None

    def outbound_layer(self) -> Layer:
        return outbound_layer(self.recorder)

    def attempt_layer(self) -> Layer:
        return attempt_layer(self.recorder)

    def inbound_layer(self) -> Layer:
        return inbound_layer(self.recorder)

    def prometheus_text(self) -> str:
        """Everything for /metrics (Content-Type: PROMETHEUS_CONTENT_TYPE)."""
        self.recorder.flush()
        return self.registry.render()

    def set_config_version(self, version: str) -> None:
        """Report the active config version as `meshlens_sidecar_config_info{version}` 1."""
        self.config_info.clear()
        self.config_info.set((version,), 1.0)

    def stats(self) -> dict[str, object]:
        """Telemetry state for /stats."""
        self.recorder.flush()
        return {
            "spans_queued": len(self.recorder.spans),
            "spans_exported": self.spans_exported.value(),
            "spans_dropped": {labels[0]: n for labels, n in self.spans_dropped.items()},
            "exporting": self._exporter is not None,
        }

    async def start(self) -> None:
        """Start the export and housekeeping tasks (owned here, cancelled by shutdown); from
        now on exchanges are recorded after their responses are written (Recorder.later)."""
        self.recorder.defer_to(asyncio.get_running_loop())
        if self._exporter is not None:
            self._exporter.start()
        if self._housekeeping is None:
            self._housekeeping = asyncio.get_running_loop().create_task(
                self._housekeep(), name="telemetry-housekeeping"
            )

    async def flush(self) -> None:
        """Export buffered spans and a metrics snapshot now."""
        self.recorder.flush()
        if self._exporter is not None:
            await self._exporter.flush_spans()
            await self._exporter.flush_metrics()
        else:
            self._discard_unexportable()

    async def shutdown(self, deadline_s: float = 5.0) -> None:
        """Stop tasks and export what is left within the deadline; what cannot be sent is
        counted as dropped."""
        self.recorder.defer_to(None)  # (what ends from now on is recorded at once)
        task, self._housekeeping = self._housekeeping, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._exporter is not None:
            await self._exporter.shutdown(deadline_s)
        else:
            self._discard_unexportable()
        access_log, self.recorder.access_log = self.recorder.access_log, None
        if access_log is not None:
            access_log.close()

    async def _housekeep(self) -> None:
        interval = self.config.export_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                if self._exporter is None:
                    self._discard_unexportable()
                if self.recorder.access_log is not None:
                    self.recorder.access_log.flush()
            except Exception:  # (task boundary: the next interval must still come)
                logger.exception("telemetry housekeeping failed")

    def _batch_ready(self) -> None:
        if self._exporter is not None:
            self._exporter.wake()

    def _discard_unexportable(self) -> None:
        dropped = len(self.recorder.spans.take(self.config.max_queue_spans))
        if dropped:
            self.spans_dropped.inc(("no_collector",), dropped)

    def _encode_metrics(self) -> bytes | None:
        self.recorder.flush()
        durations = self.recorder.durations
        if not len(durations):
            return None
        return durations.encode(self.resource, self._now_ns())
