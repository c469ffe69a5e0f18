"""OTLP/gRPC receiver (grpc.aio): TraceService/Export and MetricsService/Export.

Requests arrive as raw bytes (no deserializer) so the protobuf is parsed once, by our decoder,
and the same bytes are spooled. Bad data -> INVALID_ARGUMENT; push-back -> UNAVAILABLE with a
google.rpc.RetryInfo detail (INTERFACES §9.9: RESOURCE_EXHAUSTED is not retried without it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.metrics import CollectorMetrics
from collector.otlp.columns import Consumer, DecodedBatch, Signal
from collector.otlp.decode import decode_request
from collector.otlp.errors import OtlpError, Overloaded, PayloadTooLarge

__all__ = ["OtlpGrpcConfig", "OtlpGrpcReceiver"]

logger = logging.getLogger(__name__)

_SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
}


@dataclass(frozen=True, slots=True)
class OtlpGrpcConfig:
    """Listener and limits of the gRPC receiver."""

    host: str = "127.0.0.1"
    port: int = 4317
    max_message_bytes: int = 16 * 1024 * 1024
    shutdown_grace_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")


class OtlpGrpcReceiver:
    """The gRPC receiver stage; `port` holds the bound port after `start()`."""

    def __init__(
        self, config: OtlpGrpcConfig, next_stage: Consumer, metrics: CollectorMetrics
    ) -> None:
        self._config = config
        self._next = next_stage
        self._metrics = metrics
        self._server: grpc.aio.Server | None = None
        self.port = config.port

    @property
    def address(self) -> str:
        return f"{self._config.host}:{self.port}"

    async def start(self) -> None:
        limit = self._config.max_message_bytes
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ]
        )
        handlers = [
            grpc.method_handlers_generic_handler(
                _SERVICES[signal],
                {"Export": grpc.unary_unary_rpc_method_handler(self._handler(signal))},
            )
            for signal in (Signal.TRACES, Signal.METRICS)
        ]
        self._server.add_generic_rpc_handlers(handlers)
        self.port = self._server.add_insecure_port(f"{self._config.host}:{self._config.port}")
        await self._server.start()
        logger.info("otlp grpc receiver listening", extra={"address": self.address})

    async def shutdown(self) -> None:
        if self._server is not None:
            await self._server.stop(self._config.shutdown_grace_s)
            self._server = None

    def _handler(
        self, signal: Signal
    ) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]:
        async def export(body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            try:
                if len(body) > self._config.max_message_bytes:
                    raise PayloadTooLarge("message exceeds the size limit")
                decoded, payload = decode_request(signal, body, is_json=False)
                if decoded.accepted:
                    await self._next.consume(payload, decoded)
            except OtlpError as exc:
                self._metrics.inc(
                    "meshlens_collector_requests_total", transport="grpc", outcome=exc.reason
                )
                await _abort(context, exc)
                raise AssertionError("abort returned") from exc  # abort always raises
            self._count(decoded)
            return _response(signal, decoded)

        return export

    def _count(self, decoded: DecodedBatch) -> None:
        signal = decoded.signal.name.lower()
        outcome = "partial" if decoded.rejected else "ok"
        self._metrics.inc("meshlens_collector_requests_total", transport="grpc", outcome=outcome)
        if decoded.accepted:
            self._metrics.inc(
                "meshlens_collector_received_items_total", decoded.accepted, signal=signal
            )
        if decoded.rejected:
            self._metrics.inc(
                "meshlens_collector_rejected_items_total", decoded.rejected, signal=signal
            )


def _response(signal: Signal, decoded: DecodedBatch) -> bytes:
    if signal is Signal.TRACES:
        traces = trace_service_pb2.ExportTraceServiceResponse()
        if decoded.rejected:
            traces.partial_success.rejected_spans = decoded.rejected
            traces.partial_success.error_message = decoded.error_message
        return bytes(traces.SerializeToString())
    metrics = metrics_service_pb2.ExportMetricsServiceResponse()
    if decoded.rejected:
        metrics.partial_success.rejected_data_points = decoded.rejected
        metrics.partial_success.error_message = decoded.error_message
    return bytes(metrics.SerializeToString())


async def _abort(context: grpc.aio.ServicerContext[bytes, bytes], exc: OtlpError) -> None:
    if isinstance(exc, Overloaded):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=exc.retry_after_s)
            )
        )
        status = status_pb2.Status(
            code=grpc.StatusCode.UNAVAILABLE.value[0], message=str(exc), details=[detail]
        )
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            str(exc),
            trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
        )
    code = (
        grpc.StatusCode.RESOURCE_EXHAUSTED
        if isinstance(exc, PayloadTooLarge)
        else grpc.StatusCode.INVALID_ARGUMENT
    )
    await context.abort(code, str(exc))
