"""Sidecar telemetry exported over real OTLP/HTTP on 127.0.0.1 to the collector's own receiver.

The receiver is the real `collector.receivers.otlp_http.OtlpHttpReceiver` (gzip, protobuf, 503 +
Retry-After backpressure); only the stage after it is a RecordingConsumer that keeps the decoded
batches instead of writing to ClickHouse. The last test runs two real sidecars (sidecar.app).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.metrics import CollectorMetrics
from collector.otlp.columns import DecodedBatch, Signal
from collector.otlp.errors import Overloaded
from collector.receivers.otlp_http import OtlpHttpConfig, OtlpHttpReceiver
from sidecar.app import Sidecar, SidecarOptions
from sidecar.http import Endpoint, Request, Response
from sidecar.layers.proxy_errors import proxy_errors_layer
from sidecar.stack import Handler, compose
from sidecar.telemetry import RetryPolicy, Telemetry, TelemetryConfig
from tests.integration.conftest import ScriptedUpstream

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


async def test_client_and_server_sidecars_produce_a_linked_trace(
    receiver: tuple[OtlpHttpReceiver, RecordingConsumer],
    upstream: ScriptedUpstream,
    tmp_path: Path,
) -> None:
    """frontend app -> frontend sidecar (outbound) -> checkout sidecar (inbound) -> checkout app:
    the CLIENT span names the callee and is the parent of the SERVER span, which is the app's
    parent; both sidecars report Istio metrics from their side."""
    server, consumer = receiver
    started: list[Sidecar] = []

    async def start(service: str, app_port: int, config: dict[str, Any] | None) -> Sidecar:
        path = None
        if config is not None:
            path = tmp_path / f"{service}.json"
            path.write_text(json.dumps(config))
        sidecar = Sidecar(
            SidecarOptions(
                service=service,
                app_port=app_port,
                config_path=str(path) if path else None,
                collector_url=server.address,
                admin_port=0,
                outbound_port=0,
                inbound_port=0,
                telemetry_export_interval_s=0.05,
            )
        )
        started.append(sidecar)
        await sidecar.start()
        return sidecar

    try:
        checkout = await start("checkout", upstream.port, None)
        assert checkout.addresses is not None
        inbound_host, inbound_port = checkout.addresses.inbound
        config = {
            "version": "1",
            "upstreams": {
                "checkout": {"endpoints": [f"{inbound_host}:{inbound_port}"], "outlier": None}
            },
        }
        frontend = await start("frontend", 1, config)
        assert frontend.addresses is not None
        app_trace, app_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        out_host, out_port = frontend.addresses.outbound
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://{out_host}:{out_port}/cart/7",
                headers={"Host": "checkout", "traceparent": f"00-{app_trace}-{app_span}-01"},
            ) as response:
                assert response.status == 200
                echoed = await response.json()
        for _ in range(300):
            if len(consumer.rows(Signal.TRACES, "otel_traces")) >= 2:
                break
            await asyncio.sleep(0.01)
        frontend_metrics = frontend.telemetry.prometheus_text()
        checkout_metrics = checkout.telemetry.prometheus_text()
    finally:
        for sidecar in started:
            await sidecar.stop()

    spans = {str(s["ServiceName"]): s for s in consumer.rows(Signal.TRACES, "otel_traces")}
    client, served = spans["frontend"], spans["checkout"]
    assert client["SpanKind"] == "Client" and served["SpanKind"] == "Server"
    assert client["TraceId"] == served["TraceId"] == app_trace
    assert client["ParentSpanId"] == app_span
    assert served["ParentSpanId"] == client["SpanId"]
    client_attrs, server_attrs = client["SpanAttributes"], served["SpanAttributes"]
    assert isinstance(client_attrs, dict) and isinstance(server_attrs, dict)
    assert client_attrs["meshlens.upstream"] == "checkout"
    assert client_attrs["http.response.status_code"] == "200"
    assert client_attrs["server.address"] == inbound_host
    assert server_attrs["url.path"] == "/cart/7"
    app_parent = echoed["headers"]["traceparent"].split("-")
    assert app_parent[1] == app_trace and app_parent[2] == served["SpanId"]
    assert 'reporter="source"' in frontend_metrics
    assert 'destination_service_name="checkout"' in frontend_metrics
    assert 'reporter="destination"' in checkout_metrics
