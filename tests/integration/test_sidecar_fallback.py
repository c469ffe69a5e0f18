"""Per-route fallbacks through a real outbound sidecar: a full breaker sends the request to the
fallback service, an upstream without healthy endpoints gets the canned response; both are
marked on the response, on the span and in /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sidecar.app import Sidecar
from tests.integration.conftest import ScriptedUpstream, Step, eventually, url
from tests.integration.test_sidecar_telemetry import OtlpSink, sink  # noqa: F401

pytestmark = pytest.mark.timeout(30)

Sidecars = Callable[..., Awaitable[Sidecar]]


async def _get(sidecar: Sidecar, path: str = "/items") -> tuple[int, dict[str, str], bytes]:
    assert sidecar.addresses is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url(sidecar.addresses.outbound) + path, headers={"Host": "app"}
        ) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, await response.read()


async def _metrics(sidecar: Sidecar) -> str:
    assert sidecar.addresses is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(url(sidecar.addresses.admin) + "/metrics") as response:
            return await response.text()


async def test_a_full_breaker_sends_the_request_to_the_fallback_service(
    upstream_factory: Callable[..., Awaitable[ScriptedUpstream]], sidecars: Sidecars
) -> None:
    app = await upstream_factory("app")
    backup = await upstream_factory("backup")
    config: dict[str, Any] = {
        "upstreams": {
            "app": {
                "endpoints": [f"127.0.0.1:{app.port}"],
                "outlier": None,
                "limits": {"max_connections": 1, "max_pending": 0, "max_requests": 1},
            },
            "backup": {"endpoints": [f"127.0.0.1:{backup.port}"], "outlier": None},
        },
        "routes": [
            {
                "name": "items",
                "destinations": [{"upstream": "app"}],
                "fallback": {"on": ["overflow"], "upstream": "backup"},
            }
        ],
    }
    sidecar = await sidecars("web", 1, config=config)
    app.script.append(Step(delay_s=0.3))
    slow = asyncio.create_task(_get(sidecar))
    await eventually(lambda: len(app.seen) == 1)

    status, headers, body = await _get(sidecar)

    assert status == 200 and b'"service": "backup"' in body
    assert headers["x-meshlens-fallback"] == "overflow"
    assert (await slow)[0] == 200  # the request holding the slot was served by app
    assert 'meshlens_sidecar_fallbacks_total{route="items",reason="overflow"} 1' in (
        await _metrics(sidecar)
    )


async def test_no_healthy_endpoint_gets_the_canned_response_marked_on_the_span(
    sidecars: Sidecars,
    sink: OtlpSink,  # noqa: F811
) -> None:
    config = {
        "upstreams": {"app": {"endpoints": []}},
        "routes": [
            {
                "name": "items",
                "destinations": [{"upstream": "app"}],
                "fallback": {
                    "response": {
                        "status": 200,
                        "headers": {"content-type": "application/json"},
                        "body": '{"items": []}',
                    }
                },
            }
        ],
    }
    sidecar = await sidecars("web", 1, config=config, collector_url=sink.url)

    status, headers, body = await _get(sidecar)

    assert status == 200 and body == b'{"items": []}'
    assert headers["content-type"] == "application/json"
    assert headers["x-meshlens-fallback"] == "no_healthy_upstream"
    assert "x-meshlens-error" not in headers
    await sidecar.telemetry.flush()
    clients = [s for _, s in sink.spans if s.kind == Span.SPAN_KIND_CLIENT]
    attrs = {kv.key: kv.value for kv in clients[-1].attributes}
    assert attrs["meshlens.fallback"].bool_value is True
    assert attrs["meshlens.fallback.reason"].string_value == "no_healthy_upstream"
