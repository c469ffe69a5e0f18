"""A demo service in-process on loopback: SERVER and CLIENT spans, W3C propagation through its
proxy (HTTP_PROXY), and the faults its `/_demo/fault` endpoint switches on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from demo.services import DemoService
from demo.topology import SHOP

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Running:
    url: str
    service: DemoService
    spans: InMemorySpanExporter
    proxied: list[tuple[str, str]]  # (absolute URL, traceparent) the proxy saw


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a for a in runner.addresses if isinstance(a, tuple))[1]
    return runner, int(port)


@pytest.fixture
async def checkout(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    proxied: list[tuple[str, str]] = []

    async def proxy(request: web.Request) -> web.Response:
        # Stands in for the outbound sidecar: answers absolute-form requests itself.
        proxied.append((str(request.url), request.headers.get("traceparent", "")))
        return web.json_response({"ok": True})

    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/{tail:.*}", proxy)
    proxy_runner, proxy_port = await _serve(proxy_app)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    demo = DemoService(SHOP.service("checkout"), "checkout-1", provider.get_tracer("t"), seed=1)
    runner, port = await _serve(demo.app())
    try:
        yield Running(f"http://127.0.0.1:{port}", demo, exporter, proxied)
    finally:
        await runner.cleanup()
        await proxy_runner.cleanup()
        provider.shutdown()


async def test_a_request_continues_the_callers_trace_through_every_call(checkout: Running) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            checkout.url + "/checkout", headers={"traceparent": TRACEPARENT}
        ) as response:
            assert response.status == 200
    hosts = sorted(url for url, _ in checkout.proxied)
    assert hosts == ["http://inventory/reserve", "http://payment/charge", "http://shipping/quote"]
    spans = checkout.spans.get_finished_spans()
    server = next(s for s in spans if s.kind is SpanKind.SERVER)
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert format(server.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert server.parent is not None and format(server.parent.span_id, "016x") == "b7ad6b7169203331"
    assert len(clients) == 3
    assert {c.attributes["server.address"] for c in clients if c.attributes} == {
        "payment", "inventory", "shipping",
    }  # fmt: skip
    for client in clients:
        assert client.parent is not None and client.parent.span_id == server.context.span_id
    for _, traceparent in checkout.proxied:  # each call carries its CLIENT span's context
        assert traceparent.split("-")[1] == TRACEPARENT.split("-")[1]
        assert int(traceparent.split("-")[2], 16) in {c.context.span_id for c in clients}


async def test_an_error_burst_fails_requests_and_marks_the_span(checkout: Running) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(checkout.url + "/_demo/fault", json={"error_rate": 1.0}) as r:
            assert r.status == 200 and (await r.json())["error_rate"] == 1.0
        async with session.post(checkout.url + "/checkout") as response:
            assert response.status == 500
    server = next(s for s in checkout.spans.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 500
    assert not checkout.proxied  # failed before calling anything


async def test_a_reset_fault_drops_the_connection(checkout: Running) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(checkout.url + "/_demo/fault", json={"reset_rate": 1.0}) as r:
            assert r.status == 200
        with pytest.raises(aiohttp.ClientError):
            async with session.post(checkout.url + "/checkout") as response:
                await response.read()


async def test_a_bad_fault_body_is_refused_with_the_reason(checkout: Running) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(checkout.url + "/_demo/fault", json={"latency": 5}) as r:
            assert r.status == 400
            assert "unknown fault fields: latency" in (await r.json())["error"]
        async with session.post(checkout.url + "/_demo/fault", data=b"[1]") as r:
            assert r.status == 400
    assert checkout.service.faults.latency_ms == 0.0
