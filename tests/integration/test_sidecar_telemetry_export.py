"""Sidecar telemetry exported over real OTLP/HTTP on 127.0.0.1 to the collector's own receiver.

The receiver is the real `collector.receivers.otlp_http.OtlpHttpReceiver` (gzip, protobuf, 503 +
Retry-After backpressure); only the stage after it is a RecordingConsumer that keeps the decoded
batches instead of writing to ClickHouse.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from collector.metrics import CollectorMetrics
from collector.otlp.columns import DecodedBatch, Signal
from collector.otlp.errors import Overloaded
from collector.receivers.otlp_http import OtlpHttpConfig, OtlpHttpReceiver
from sidecar.http import Endpoint, Request, Response
from sidecar.layers.proxy_errors import proxy_errors_layer
from sidecar.stack import Handler, compose
from sidecar.telemetry import RetryPolicy, Telemetry, TelemetryConfig

pytestmark = pytest.mark.timeout(30)


@dataclass
class RecordingConsumer:
    """Keeps decoded batches; raises Overloaded for the first `overloaded` calls."""

    overloaded: int = 0
    batches: list[DecodedBatch] = field(default_factory=list)

    async def consume(self, payload: bytes, decoded: DecodedBatch) -> None:
        if self.overloaded > 0:
            self.overloaded -= 1
            raise Overloaded("pipeline full", retry_after_s=2)
        self.batches.append(decoded)

    def rows(self, signal: Signal, table: str) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for batch in self.batches:
            if batch.signal is signal and table in batch.tables:
                columns = batch.tables[table]
                names = list(columns)
                for i in range(len(columns[names[0]])):
                    out.append({name: columns[name][i] for name in names})
        return out


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtlpHttpReceiver, RecordingConsumer]]:
    consumer = RecordingConsumer()
    server = OtlpHttpReceiver(OtlpHttpConfig(port=0), consumer, CollectorMetrics())
    await server.start()
    try:
        yield server, consumer
    finally:
        await server.shutdown()


def routed(telemetry: Telemetry) -> Handler:
    async def app(request: Request) -> Response:
        return Response(200 if request.path != "/fail" else 503, body=b"hello")

    def route(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            request.context.upstream, request.context.route = "orders", "orders-default"
            request.context.endpoint = Endpoint("127.0.0.1", 9, service="orders")
            return await inner(request)

        return handle

    return compose(
        [telemetry.outbound_layer(), proxy_errors_layer(), route, telemetry.attempt_layer()], app
    )


async def test_client_spans_and_metrics_arrive_at_the_collector(
    receiver: tuple[OtlpHttpReceiver, RecordingConsumer],
) -> None:
    server, consumer = receiver
    telemetry = Telemetry(
        TelemetryConfig(
            service="checkout", instance="c-1", collector_url=server.address, export_interval_s=0.05
        )
    )
    await telemetry.start()
    handler = routed(telemetry)
    for path in ("/a", "/fail", "/b"):
        await handler(Request("GET", path, authority="orders"))
    for _ in range(200):  # the export loop runs every 50 ms
        if len(consumer.rows(Signal.TRACES, "otel_traces")) == 3:
            break
        await asyncio.sleep(0.01)
    await telemetry.shutdown(deadline_s=5)

    spans = consumer.rows(Signal.TRACES, "otel_traces")
    assert len(spans) == 3
    for span in spans:
        assert span["ServiceName"] == "checkout" and span["SpanKind"] == "Client"
        attrs = span["SpanAttributes"]
        assert isinstance(attrs, dict)
        assert attrs["meshlens.upstream"] == "orders"
        assert attrs["meshlens.route"] == "orders-default"
        assert attrs["server.address"] == "127.0.0.1"
    assert sorted(str(s["StatusCode"]) for s in spans) == ["Error", "Unset", "Unset"]
    metric_batches = [b for b in consumer.batches if b.signal is Signal.METRICS]
    assert metric_batches, "shutdown exports a final metrics snapshot"
    assert telemetry.spans_exported.value() == 3


async def test_backpressure_503_is_retried_after_retry_after(
    receiver: tuple[OtlpHttpReceiver, RecordingConsumer],
) -> None:
    server, consumer = receiver
    consumer.overloaded = 1
    slept: list[float] = []

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)

    telemetry = Telemetry(
        TelemetryConfig(service="checkout", collector_url=server.address), sleep=record_sleep
    )
    await routed(telemetry)(Request("GET", "/a", authority="orders"))
    await telemetry.flush()
    assert slept == [2.0]  # the receiver's Retry-After
    assert len(consumer.rows(Signal.TRACES, "otel_traces")) == 1
    assert telemetry.export_requests.value(("traces", "retry")) == 1
    await telemetry.shutdown()


async def test_unreachable_collector_shutdown_is_bounded_and_counts_the_loss() -> None:
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def no_wait(_seconds: float) -> None:
        return None

    telemetry = Telemetry(
        TelemetryConfig(
            service="checkout",
            collector_url=f"http://127.0.0.1:{port}",
            export_timeout_s=1.0,
            retry=RetryPolicy(max_attempts=3),
        ),
        sleep=no_wait,
    )
    await telemetry.start()
    await routed(telemetry)(Request("GET", "/a", authority="orders"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await telemetry.shutdown(deadline_s=2.0)
    assert loop.time() - started < 2.5
    assert telemetry.spans_dropped.value(("export_failed",)) == 1
