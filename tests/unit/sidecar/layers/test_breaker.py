from __future__ import annotations

import asyncio

import pytest

from sidecar.errors import Overflow
from sidecar.http import Response
from sidecar.layers.breaker import Breaker, BreakerConfig, breaker_layer
from sidecar.stack import compose
from tests.fakes import make_request


class Gate:
    """An upstream whose answers are released by the test."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self, request) -> Response:
        self.started += 1
        await self.release.wait()
        return Response(status=200)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_over_max_connections_wait_and_over_max_pending_fail_fast() -> None:
    breaker = Breaker("svc", BreakerConfig(max_connections=2, max_pending=1, max_requests=100))
    gate = Gate()
    handler = compose([breaker_layer({"svc": breaker})], gate)
    tasks = [asyncio.create_task(handler(make_request(upstream="svc"))) for _ in range(3)]
    await _settle()
    assert gate.started == 2
    assert breaker.stats()["pending"] == 1

    request = make_request(upstream="svc")
    with pytest.raises(Overflow):
        await handler(request)
    assert request.context.attributes["meshlens.breaker.state"] == "open"
    assert request.context.attributes["meshlens.breaker.limit"] == "max_pending"

    gate.release.set()
    assert [r.status for r in await asyncio.gather(*tasks)] == [200, 200, 200]
    assert gate.started == 3
    assert breaker.stats()["active"] == 0
    assert breaker.stats()["overflows"] == {"max_pending": 1}


async def test_max_requests_caps_active_plus_pending() -> None:
    breaker = Breaker("svc", BreakerConfig(max_connections=1, max_pending=10, max_requests=2))
    gate = Gate()
    handler = compose([breaker_layer({"svc": breaker})], gate)
    tasks = [asyncio.create_task(handler(make_request(upstream="svc"))) for _ in range(2)]
    await _settle()

    with pytest.raises(Overflow, match="max_requests"):
        await handler(make_request(upstream="svc"))
    gate.release.set()
    await asyncio.gather(*tasks)


async def test_cancelled_waiter_leaves_the_queue() -> None:
    breaker = Breaker("svc", BreakerConfig(max_connections=1, max_pending=5))
    gate = Gate()
    handler = compose([breaker_layer({"svc": breaker})], gate)
    first = asyncio.create_task(handler(make_request(upstream="svc")))
    waiting = asyncio.create_task(handler(make_request(upstream="svc")))
    await _settle()
    assert breaker.pending == 1

    waiting.cancel()
    await _settle()
    assert breaker.pending == 0
    gate.release.set()
    await first
    assert breaker.active == 0


async def test_observe_only_never_waits_or_refuses() -> None:
    config = BreakerConfig(max_connections=1, max_pending=0, max_requests=1, enforce=False)
    breaker = Breaker("svc", config)
    gate = Gate()
    handler = compose([breaker_layer({"svc": breaker})], gate)
    requests = [make_request(upstream="svc") for _ in range(3)]
    tasks = [asyncio.create_task(handler(r)) for r in requests]
    await _settle()

    assert gate.started == 3
    assert requests[1].context.attributes["meshlens.breaker.would_overflow"] == "max_requests"
    gate.release.set()
    await asyncio.gather(*tasks)
    assert breaker.active == 0


async def test_unknown_upstream_passes_through() -> None:
    gate = Gate()
    gate.release.set()
    handler = compose([breaker_layer({})], gate)

    assert (await handler(make_request(upstream="elsewhere"))).status == 200


def test_breaker_config_validates() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(max_connections=0)


async def test_a_queued_request_fails_fast_after_the_pending_timeout() -> None:
    config = BreakerConfig(max_connections=1, max_pending=5, pending_timeout_s=0.01)
    breaker = Breaker("svc", config)
    gate = Gate()
    handler = compose([breaker_layer({"svc": breaker})], gate)
    first = asyncio.create_task(handler(make_request(upstream="svc")))
    await _settle()
    request = make_request(upstream="svc")

    with pytest.raises(Overflow):
        await handler(request)

    assert request.context.attributes["meshlens.breaker.limit"] == "pending_timeout"
    assert breaker.pending == 0
    gate.release.set()
    await first
    assert breaker.active == 0
