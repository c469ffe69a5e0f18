"""gRPC through two sidecars: a real grpcio client and server, h2c between every hop.

grpcio honours `grpc.http_proxy` only as an HTTP CONNECT proxy, not as a forwarding proxy, so the
client channel dials the outbound sidecar's port directly and names the service in `:authority`
with the channel option `grpc.default_authority` (the outbound listener routes on it, like `Host`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sidecar.app import Sidecar
from tests.integration.pki import Pki

pytestmark = pytest.mark.timeout(30)

Sidecars = Callable[..., Awaitable[Sidecar]]
SERVICE = "demo.Greeter"


class Greeter:
    """The app: unary, server-streaming, client-streaming and bidi methods on raw bytes."""

    def __init__(self) -> None:
        self.unavailable_first = 0  # answer UNAVAILABLE this many times before OK
        self.calls: dict[str, int] = {}
        self.timeouts: list[float | None] = []
        self.lock = threading.Lock()

    def _count(self, name: str) -> int:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            return self.calls[name]

    def hi(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        n = self._count("Hi")
        self.timeouts.append(context.time_remaining())
        if n <= self.unavailable_first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        context.set_trailing_metadata((("x-app-trailer", "kept"), ("x-app-bin", b"\x00\xffok")))
        return b"hello " + request

    def fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._count("Fail")
        context.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")
        raise AssertionError("abort raises")

    def slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._count("Slow")
        self.timeouts.append(context.time_remaining())
        time.sleep(1.0)
        return b"late"

    def count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request)):
            yield f"{i}".encode() * 1000

    def total(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return str(sum(len(r) for r in requests)).encode()

    def echo(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for r in requests:
            yield r.upper()


@pytest.fixture
def greeter() -> Iterator[tuple[Greeter, int]]:
    app = Greeter()
    handlers = {
        "Hi": grpc.unary_unary_rpc_method_handler(app.hi),
        "Fail": grpc.unary_unary_rpc_method_handler(app.fail),
        "Slow": grpc.unary_unary_rpc_method_handler(app.slow),
        "Count": grpc.unary_stream_rpc_method_handler(app.count),
        "Total": grpc.stream_unary_rpc_method_handler(app.total),
        "Echo": grpc.stream_stream_rpc_method_handler(app.echo),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield app, port
    server.stop(0)


class OtlpSink:
    """Keeps the spans an OTLP/HTTP exporter sends, with their service names."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.metrics_seen: list[tuple[str, dict[str, Any]]] = []  # (metric name, point attrs)
        self.url = ""

    async def traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for rs in export.resource_spans:
            service = next(
                a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
            )
            for scope in rs.scope_spans:
                self.spans.extend((service, span) for span in scope.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def metrics(self, request: web.Request) -> web.Response:
        export = ExportMetricsServiceRequest.FromString(await request.read())
        for rm in export.resource_metrics:
            for scope in rm.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.histogram.data_points:
                        attrs = {
                            a.key: a.value.string_value or a.value.int_value
                            for a in point.attributes
                        }
                        self.metrics_seen.append((metric.name, attrs))
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
async def sink() -> AsyncIterator[OtlpSink]:
    sink = OtlpSink()
    app = web.Application()
    app.router.add_post("/v1/traces", sink.traces)
    app.router.add_post("/v1/metrics", sink.metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a for a in runner.addresses if isinstance(a, tuple))[1]
    sink.url = f"http://127.0.0.1:{port}"
    yield sink
    await runner.cleanup()


async def _mesh(
    sidecars: Sidecars, app_port: int, sink: OtlpSink, retry: dict[str, Any] | None = None
) -> tuple[Sidecar, Sidecar, str]:
    """Server sidecar in front of the app, client sidecar routing `greeter` to it."""
    server = await sidecars("greeter", app_port, collector_url=sink.url)
    assert server.addresses is not None
    host, port = server.addresses.inbound
    upstream: dict[str, Any] = {"endpoints": [f"{host}:{port}"], "protocol": "grpc"}
    config: dict[str, Any] = {"upstreams": {"greeter": upstream}}
    if retry is not None:
        config["routes"] = [
            {
                "name": "greeter",
                "match": {"hosts": ["greeter"]},
                "destinations": [{"upstream": "greeter"}],
                "retry": retry,
            },
        ]
    client = await sidecars("web", 1, config=config, collector_url=sink.url)
    assert client.addresses is not None
    out_host, out_port = client.addresses.outbound
    return client, server, f"{out_host}:{out_port}"


_RAW: dict[str, Any] = {"request_serializer": None, "response_deserializer": None}  # bytes


def _channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=[("grpc.default_authority", "greeter")])


def _attrs(span: Span) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


async def test_unary_call_passes_both_sidecars_with_trailers_and_spans_carry_status(
    sink: OtlpSink, greeter: tuple[Greeter, int], sidecars: Sidecars
) -> None:
    _, port = greeter
    client, server, target = await _mesh(sidecars, port, sink)

    def call() -> tuple[bytes, Any]:
        with _channel(target) as channel:
            hi = channel.unary_unary(f"/{SERVICE}/Hi", **_RAW)
            reply, rpc = hi.with_call(b"bob", timeout=5)
            return reply, rpc.trailing_metadata()

    reply, trailing = await asyncio.to_thread(call)
    assert reply == b"hello bob"
    received = [(m.key, m.value) for m in trailing]
    assert ("x-app-trailer", "kept") in received
    assert ("x-app-bin", b"\x00\xffok") in received
    await client.telemetry.flush()
    await server.telemetry.flush()
    client_spans = [s for svc, s in sink.spans if svc == "web" and s.kind == Span.SPAN_KIND_CLIENT]
    server_spans = [
        s for svc, s in sink.spans if svc == "greeter" and s.kind == Span.SPAN_KIND_SERVER
    ]
    assert client_spans and server_spans
    attrs = _attrs(client_spans[0])
    assert attrs["rpc.grpc.status_code"] == 0
    assert attrs["meshlens.route"] == "demo.Greeter/Hi"  # the gRPC method is the route
    assert client_spans[0].name == "demo.Greeter/Hi"
    assert _attrs(server_spans[0])["rpc.grpc.status_code"] == 0
    assert server_spans[0].status.code != Status.STATUS_CODE_ERROR
    metrics = server.metrics_text()
    assert 'request_protocol="grpc"' in metrics and 'grpc_response_status="0"' in metrics
    assert client.h2_upstream.stats()["streams"] == 1
    # per-method gRPC metrics on the admin /metrics of both sidecars
    for sidecar, labels in (
        (client, 'reporter="source",destination_service_name="greeter"'),
        (server, 'reporter="destination",destination_service_name="greeter"'),
    ):
        assert sidecar.addresses is not None
        host, admin_port = sidecar.addresses.admin
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://{host}:{admin_port}/metrics", timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                assert response.status == 200
                text = await response.text()
        assert (
            f'meshlens_sidecar_grpc_requests_total{{{labels},grpc_method="/{SERVICE}/Hi",'
            'grpc_response_status="0"} 1' in text
        ), text
        assert "meshlens_sidecar_grpc_request_duration_milliseconds_count{" in text
    # ... and over OTLP as rpc.client/server.call.duration per method
    rpc = [(name, attrs) for name, attrs in sink.metrics_seen if name.startswith("rpc.")]
    assert (
        "rpc.client.call.duration",
        {
            "rpc.system": "grpc",
            "rpc.service": SERVICE,
            "rpc.method": "Hi",
            "rpc.grpc.status_code": "0",
            "server.address": "greeter",
        },
    ) in rpc, rpc
    assert any(name == "rpc.server.call.duration" for name, _ in rpc), rpc


async def test_error_status_and_message_reach_the_client_and_the_span(
    sink: OtlpSink, greeter: tuple[Greeter, int], sidecars: Sidecars
) -> None:
    _, port = greeter
    client, _, target = await _mesh(sidecars, port, sink)

    def call() -> grpc.RpcError:
        with _channel(target) as channel:
            try:
                channel.unary_unary(f"/{SERVICE}/Fail", **_RAW)(b"x", timeout=5)
            except grpc.RpcError as exc:
                return exc
        raise AssertionError("the call should fail")

    error = await asyncio.to_thread(call)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no such greeting"
    await client.telemetry.flush()
    spans = [s for svc, s in sink.spans if svc == "web" and s.kind == Span.SPAN_KIND_CLIENT]
    assert _attrs(spans[0])["rpc.grpc.status_code"] == 5
    assert _attrs(spans[0])["http.response.status_code"] == 200
    assert spans[0].status.code == Status.STATUS_CODE_ERROR  # gRPC NOT_FOUND, HTTP 200


async def test_streaming_calls_in_every_direction(
    sink: OtlpSink, greeter: tuple[Greeter, int], sidecars: Sidecars
) -> None:
    _, port = greeter
    _, _, target = await _mesh(sidecars, port, sink)

    def calls() -> tuple[list[bytes], bytes, list[bytes]]:
        with _channel(target) as channel:
            streamed = list(channel.unary_stream(f"/{SERVICE}/Count", **_RAW)(b"50", timeout=5))
            upload = channel.stream_unary(f"/{SERVICE}/Total", **_RAW)
            total = upload(iter([b"a" * 70_000] * 20), timeout=5)
            echo = channel.stream_stream(f"/{SERVICE}/Echo", **_RAW)
            echoed = list(echo(iter([b"x", b"yz", b"w"]), timeout=5))
            return streamed, total, echoed

    streamed, total, echoed = await asyncio.to_thread(calls)
    assert streamed == [f"{i}".encode() * 1000 for i in range(50)]
    assert total == b"1400000"  # 1.4 MB upstream: more than every flow-control window
    assert echoed == [b"X", b"YZ", b"W"]


async def test_unavailable_is_retried_until_ok(
    sink: OtlpSink, greeter: tuple[Greeter, int], sidecars: Sidecars
) -> None:
    app, port = greeter
    app.unavailable_first = 2
    client, _, target = await _mesh(sidecars, port, sink, retry={"attempts": 3})

    def call() -> bytes:
        with _channel(target) as channel:
            reply: bytes = channel.unary_unary(f"/{SERVICE}/Hi", **_RAW)(b"again", timeout=5)
            return reply

    assert await asyncio.to_thread(call) == b"hello again"
    assert app.calls["Hi"] == 3
    await client.telemetry.flush()
    attempts = [s for svc, s in sink.spans if svc == "web" and s.kind == Span.SPAN_KIND_CLIENT]
    assert sorted(int(str(_attrs(s)["rpc.grpc.status_code"])) for s in attempts) == [0, 14, 14]


async def test_deadline_is_propagated_and_exceeded_is_not_retried(
    sink: OtlpSink, greeter: tuple[Greeter, int], sidecars: Sidecars
) -> None:
    app, port = greeter
    _, _, target = await _mesh(sidecars, port, sink, retry={"attempts": 3})

    def call() -> grpc.StatusCode:
        with _channel(target) as channel:
            try:
                channel.unary_unary(f"/{SERVICE}/Slow", **_RAW)(b"x", timeout=0.3)
            except grpc.RpcError as exc:
                code: grpc.StatusCode = exc.code()
                return code
        raise AssertionError("the call should time out")

    assert await asyncio.to_thread(call) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert app.calls["Slow"] == 1
    remaining = app.timeouts[0]
    # grpc-timeout reached the app (the bound with 10 ms for grpc's own clock conversion:
    # time_remaining() turns a monotonic deadline into wall-clock time with two clock reads,
    # and a busy machine pre-empting between them has shown 0.30019)
    assert remaining is not None and 0 < remaining <= 0.31


async def test_grpc_over_mesh_mtls_between_the_sidecars(
    tmp_path: Path, greeter: tuple[Greeter, int], sidecars: Sidecars
) -> None:
    _, port = greeter
    pki = Pki(tmp_path / "ca")
    cert, key, ca = pki.write(pki.issue("greeter"), tmp_path / "server")
    server = await sidecars(
        "greeter",
        port,
        mtls="strict",
        trust_domain=pki.trust_domain,
        cert_file=cert,
        key_file=key,
        ca_file=ca,
    )
    assert server.addresses is not None
    host, inbound = server.addresses.inbound
    identity = f"spiffe://{pki.trust_domain}/ns/default/sa/greeter"
    cert, key, ca = pki.write(pki.issue("web"), tmp_path / "client")
    endpoint = {"host": host, "port": inbound, "identity": identity}
    client = await sidecars(
        "web",
        1,
        config={"upstreams": {"greeter": {"endpoints": [endpoint], "protocol": "grpc"}}},
        trust_domain=pki.trust_domain,
        cert_file=cert,
        key_file=key,
        ca_file=ca,
    )
    assert client.addresses is not None
    out_host, out_port = client.addresses.outbound

    def call() -> bytes:
        with _channel(f"{out_host}:{out_port}") as channel:
            reply: bytes = channel.unary_unary(f"/{SERVICE}/Hi", **_RAW)(b"tls", timeout=5)
            return reply

    assert await asyncio.to_thread(call) == b"hello tls"
    assert client.h2_upstream.stats()["streams"] == 1
