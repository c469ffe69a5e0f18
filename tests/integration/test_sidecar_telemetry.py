"""Spans from a client+server sidecar pair reach an OTLP/HTTP collector as one trace."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sidecar.app import Sidecar
from tests.integration.conftest import ScriptedUpstream, url

pytestmark = pytest.mark.timeout(30)


class OtlpSink:
    """A minimal OTLP/HTTP trace receiver that keeps every span with its service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.url = ""

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if body[:2] == b"\x1f\x8b":  # aiohttp usually inflates Content-Encoding: gzip itself
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope_spans.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def metrics(self, request: web.Request) -> web.Response:
        await request.read()
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


def _attrs(span: Span) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


async def test_client_and_server_spans_of_one_call_form_one_trace(
    sink: OtlpSink, upstream: ScriptedUpstream, sidecars: Callable[..., Awaitable[Sidecar]]
) -> None:
    server = await sidecars("reviews", upstream.port, collector_url=sink.url)
    assert server.addresses is not None
    host, port = server.addresses.inbound
    client = await sidecars(
        "web",
        upstream.port,
        config={"upstreams": {"reviews": {"endpoints": [f"{host}:{port}"]}}},
        collector_url=sink.url,
    )
    assert client.addresses is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url(client.addresses.outbound) + "/r/1", headers={"Host": "reviews"}
        ) as response:
            assert response.status == 200
            app_traceparent = (await response.json())["headers"]["traceparent"]
    await client.telemetry.flush()
    await server.telemetry.flush()
    clients = [s for svc, s in sink.spans if svc == "web" and s.kind == Span.SPAN_KIND_CLIENT]
    servers = [s for svc, s in sink.spans if svc == "reviews" and s.kind == Span.SPAN_KIND_SERVER]
    assert len(clients) == 1 and len(servers) == 1
    client_span, server_span = clients[0], servers[0]
    attrs = _attrs(client_span)
    assert attrs["meshlens.upstream"] == "reviews"
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == host
    assert "meshlens.route" in attrs
    assert server_span.trace_id == client_span.trace_id
    assert server_span.parent_span_id == client_span.span_id
    # the app sees the server span as its parent
    assert app_traceparent.split("-")[2] == server_span.span_id.hex()
