"""OTLP/HTTP receiver (aiohttp): POST /v1/traces and /v1/metrics, plus GET /metrics and /healthz.

Protobuf and JSON bodies, gzip/deflate (inflated with a hard cap), answers in the request's
content type, partial success for invalid items, google.rpc.Status bodies on errors and
503 + Retry-After when the pipeline pushes back (INTERFACES §9.8: retried by old and new SDKs).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from aiohttp import web
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.metrics import PROMETHEUS_CONTENT_TYPE, CollectorMetrics, render_prometheus
from collector.otlp.columns import Consumer, DecodedBatch, Signal
from collector.otlp.decode import decode_request
from collector.otlp.errors import InvalidRequest, OtlpError, Overloaded, PayloadTooLarge
from collector.receivers.body import JSON, PROTOBUF, inflate, media_type

__all__ = ["OtlpHttpConfig", "OtlpHttpReceiver"]

logger = logging.getLogger(__name__)

# google.rpc.Code values for the Status body.
_GRPC_CODES = {400: 3, 413: 8, 415: 3, 503: 14}


@dataclass(frozen=True, slots=True)
class OtlpHttpConfig:
    """Listener and limits of the HTTP receiver."""

    host: str = "127.0.0.1"
    port: int = 4318
    max_body_bytes: int = 16 * 1024 * 1024
    read_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")


class OtlpHttpReceiver:
    """The HTTP receiver stage; `port` holds the bound port after `start()`."""

    def __init__(
        self, config: OtlpHttpConfig, next_stage: Consumer, metrics: CollectorMetrics
    ) -> None:
        self._config = config
        self._next = next_stage
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port = config.port

    @property
    def address(self) -> str:
        return f"http://{self._config.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=self._config.max_body_bytes)
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics_export)
        app.router.add_get("/metrics", self._prometheus)
        app.router.add_get("/healthz", self._healthz)
        # We inflate bodies ourselves, with a cap, so a gzip bomb is never fully expanded.
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._config.host, self._config.port)
        await site.start()
        for address in self._runner.addresses:
            self.port = int(address[1])
            break
        logger.info("otlp http receiver listening", extra={"address": self.address})

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _traces(self, request: web.Request) -> web.Response:
        return await self._export(request, Signal.TRACES)

    async def _metrics_export(self, request: web.Request) -> web.Response:
        return await self._export(request, Signal.METRICS)

    async def _prometheus(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=render_prometheus(self._metrics).encode(),
            headers={"Content-Type": PROMETHEUS_CONTENT_TYPE},
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _export(self, request: web.Request, signal: Signal) -> web.Response:
        kind = JSON
        try:
            kind = media_type(request.headers.get("Content-Type", ""))
            body = await self._read_body(request)
            decoded, payload = decode_request(signal, body, is_json=kind == JSON)
            if decoded.accepted:
                await self._next.consume(payload, decoded)
        except OtlpError as exc:
            self._metrics.inc(
                "meshlens_collector_requests_total", transport="http", outcome=exc.reason
            )
            return _error_response(exc, kind)
        self._count(decoded)
        return _success_response(signal, decoded, kind)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"body of {request.content_length} bytes exceeds {limit}")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._config.read_timeout_s):
                async for chunk in request.content.iter_chunked(256 * 1024):
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError as exc:
            raise InvalidRequest(
                f"body not received within {self._config.read_timeout_s}s"
            ) from exc
        return inflate(b"".join(chunks), request.headers.get("Content-Encoding", ""), limit)

    def _count(self, decoded: DecodedBatch) -> None:
        signal = decoded.signal.name.lower()
        outcome = "partial" if decoded.rejected else "ok"
        self._metrics.inc("meshlens_collector_requests_total", transport="http", outcome=outcome)
        if decoded.accepted:
            self._metrics.inc(
                "meshlens_collector_received_items_total", decoded.accepted, signal=signal
            )
        if decoded.rejected:
            self._metrics.inc(
                "meshlens_collector_rejected_items_total", decoded.rejected, signal=signal
            )


def _success_response(signal: Signal, decoded: DecodedBatch, kind: str) -> web.Response:
    if signal is Signal.TRACES:
        response = trace_service_pb2.ExportTraceServiceResponse()
        if decoded.rejected:
            response.partial_success.rejected_spans = decoded.rejected
            response.partial_success.error_message = decoded.error_message
        json_body = {"rejectedSpans": str(decoded.rejected)}
    else:
        response = metrics_service_pb2.ExportMetricsServiceResponse()
        if decoded.rejected:
            response.partial_success.rejected_data_points = decoded.rejected
            response.partial_success.error_message = decoded.error_message
        json_body = {"rejectedDataPoints": str(decoded.rejected)}
    if kind == PROTOBUF:
        return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)
    document: dict[str, object] = {}
    if decoded.rejected:
        document["partialSuccess"] = {**json_body, "errorMessage": decoded.error_message}
    return web.Response(body=json.dumps(document).encode(), content_type=JSON)


def _error_response(exc: OtlpError, kind: str) -> web.Response:
    code = _GRPC_CODES.get(exc.status, 2)
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after_s)
    if kind == PROTOBUF:
        body = status_pb2.Status(code=code, message=str(exc)).SerializeToString()
    else:
        body = json.dumps({"code": code, "message": str(exc)}).encode()
    return web.Response(status=exc.status, body=body, content_type=kind, headers=headers)
