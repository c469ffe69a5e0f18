"""A fused route (sidecar/layers/fused.py) against the layered chain it replaces: the same
config, fakes and request sequence through build_outbound(fuse=True) and (fuse=False) must give
the same responses, span attributes, context, upstream calls, sleeps, /stats, spans and metrics,
including where the fused frame hands over to the layered chain (a retry, a gRPC request)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sidecar.build import BuiltStack, build_outbound
from sidecar.config import parse_config
from sidecar.errors import ERROR_HEADER, UpstreamConnectError, UpstreamReset
from sidecar.http import Request, Response
from sidecar.layers.grpc import grpc_attempt_layer, grpc_layer
from sidecar.telemetry import Telemetry, TelemetryConfig
from sidecar.telemetry.context import IdSource
from tests.fakes import (
    HANG,
    ManualClock,
    MemoryStream,
    RecordingSleep,
    ScriptedUpstream,
    SequenceRandom,
    body_bytes,
    make_request,
)

A, B = "10.0.0.1:80", "10.0.0.2:80"


class NsClock:
    """Unix-ns clock advancing 1 ms per reading (telemetry's now_ns)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


class Gate:
    """A terminal whose calls wait until `open()`, then answer 200 (for breaker queueing)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.calls = 0

    async def __call__(self, request: Request) -> Response:
        self.calls += 1
        await self.event.wait()
        return Response(200, body=b"ok")


class Rig:
    """One stack (fused or layered) with its own deterministic fakes."""

    def __init__(
        self, doc: dict[str, Any], fuse: bool, terminal: Callable[[Request], Awaitable[Response]]
    ) -> None:
        self.clock = ManualClock()
        self.sleep = RecordingSleep(self.clock)
        self.telemetry = Telemetry(
            TelemetryConfig(service="web", instance="web-1"), now_ns=NsClock(), ids=IdSource(seed=1)
        )
        self.terminal = terminal
        self.stack: BuiltStack = build_outbound(
            parse_config(doc),
            terminal=terminal,
            outer=[self.telemetry.outbound_layer(), grpc_layer(clock=self.clock)],
            per_attempt=[self.telemetry.attempt_layer(), grpc_attempt_layer(clock=self.clock)],
            clock=self.clock,
            sleep=self.sleep,
            random=SequenceRandom([0.3, 0.7, 0.1, 0.9, 0.5]),
            fuse=fuse,
        )

    async def send(self, request: Request) -> dict[str, Any]:
        try:
            response = await self.stack.handler(request)
        except BaseException as exc:  # the outcome is compared, whatever it is
            outcome: object = type(exc).__name__
        else:
            outcome = (response.status, response.headers, await body_bytes(response.body))
        context = request.context
        return {
            "outcome": outcome,
            "attributes": dict(context.attributes),
            "route": context.route,
            "upstream": context.upstream,
            "attempt": context.attempt,
            "endpoint": context.endpoint,
            "previous": list(context.previous_endpoints),
            "deadline": context.deadline,
            "deadline_timer": context.deadline_timer,
        }

    def state(self) -> dict[str, Any]:
        spans = self.telemetry.recorder.spans.take(10_000)
        terminal = self.terminal
        seen = terminal.seen if isinstance(terminal, ScriptedUpstream) else []
        return {
            "calls": [(c.method, c.target, c.body, c.endpoint, c.attempt, c.headers) for c in seen],
            "sleeps": list(self.sleep.calls),
            "clock": self.clock.now,
            "stats": self.stack.stats(),
            "spans": spans,
            "metrics": self.telemetry.prometheus_text(),
        }


def _doc(route: dict[str, Any] | None = None, **upstream: Any) -> dict[str, Any]:
    spec = {
        "endpoints": [A, B],
        "lb": "least_request",
        "outlier": {"consecutive_5xx": 2, "success_rate": None, "max_ejection_percent": 50},
        **upstream,
    }
    routes = []
    if route is not None:
        routes.append(
            {
                "name": "api",
                "match": {"path_prefix": "/api/"},
                "destinations": [{"upstream": "reviews"}],
                **route,
            }
        )
    return {"version": "v1", "upstreams": {"reviews": spec}, "routes": routes}


def _requests(n: int, target: str = "/api/x", **kw: Any) -> list[Request]:
    return [make_request(authority="reviews", target=target, **kw) for _ in range(n)]


async def _same(
    doc: dict[str, Any],
    make_terminal: Callable[[], ScriptedUpstream],
    make_requests: Callable[[], list[Request]],
    fused_route: str = "api",
) -> list[dict[str, Any]]:
    """Send the requests one by one through both forms; assert every observation equal."""
    rigs = [Rig(doc, fuse, make_terminal()) for fuse in (True, False)]
    assert rigs[0].stack.describe()["fused_routes"] == [fused_route, "default"]
    assert rigs[1].stack.describe()["fused_routes"] == []
    results = []
    for rig in rigs:
        results.append([await rig.send(request) for request in make_requests()])
    assert results[0] == results[1]
    assert rigs[0].state() == rigs[1].state()
    return results[0]


async def test_plain_requests_are_the_same_fused() -> None:
    out = await _same(_doc({"retry": {"attempts": 2}}), ScriptedUpstream, lambda: _requests(4))
    assert [o["outcome"][0] for o in out] == [200] * 4


async def test_default_route_is_fused_too() -> None:
    out = await _same(_doc({}), ScriptedUpstream, lambda: _requests(3, target="/other"))
    assert {o["route"] for o in out} == {"default"}


async def test_a_retry_after_a_503_goes_on_through_the_layered_chain() -> None:
    def upstream() -> ScriptedUpstream:
        return ScriptedUpstream(by_endpoint={A: [503, 503, 503]}, default=200)

    out = await _same(_doc({"retry": {"attempts": 3}}), upstream, lambda: _requests(4))
    assert out[0]["outcome"][0] == 200
    assert out[0]["attributes"]["meshlens.retry.reason"] == "gateway-error"
    assert out[0]["attributes"]["meshlens.retry.attempts"] == 2
    assert [e.address for e in out[0]["previous"]] == [A, B]


async def test_errors_retry_budget_and_max_attempts_are_the_same() -> None:
    def upstream() -> ScriptedUpstream:
        return ScriptedUpstream(
            statuses=[UpstreamConnectError("refused"), UpstreamReset("reset"), 503, 503, 502],
            default=200,
        )

    doc = _doc(
        {"retry": {"attempts": 2, "budget": {"ratio": 0.0, "min_per_s": 0.1, "window_s": 10}}}
    )
    out = await _same(doc, upstream, lambda: _requests(4), "api")
    reasons = [o["attributes"].get("meshlens.retry.budget_exhausted") for o in out]
    assert True in reasons  # the budget ran out on the way: no retry, counted the same


async def test_a_fault_hit_and_miss_and_an_observe_only_fault_are_the_same() -> None:
    fault = {"delay": {"ms": 20, "percent": 50}, "abort": {"status": 500, "percent": 50}}
    out = await _same(_doc({"fault": fault}), ScriptedUpstream, lambda: _requests(5))
    assert any(o["attributes"].get("meshlens.fault.abort") == 500 for o in out)
    assert any("meshlens.fault.abort" not in o["attributes"] for o in out)
    observe = {**fault, "enforce": False}
    out = await _same(_doc({"fault": observe}), ScriptedUpstream, lambda: _requests(5))
    assert {o["outcome"][0] for o in out} == {200}
    assert any("meshlens.fault.would_abort" in o["attributes"] for o in out)


async def test_an_observe_only_and_an_enforced_rate_limit_are_the_same() -> None:
    for enforce in (False, True):
        limit = {"rps": 1, "burst": 2, "enforce": enforce}
        out = await _same(_doc({"ratelimit": limit}), ScriptedUpstream, lambda: _requests(4))
        key = "meshlens.ratelimit.would_limit" if not enforce else "meshlens.ratelimit.limited"
        assert [key in o["attributes"] for o in out] == [False, False, True, True]


async def test_outlier_ejection_is_the_same() -> None:
    def upstream() -> ScriptedUpstream:
        return ScriptedUpstream(by_endpoint={A: [500] * 10}, default=200)

    out = await _same(_doc({}), upstream, lambda: _requests(6))
    assert any(o["attributes"].get("meshlens.outlier.ejected") for o in out)


async def test_a_streamed_body_is_buffered_and_retried_the_same() -> None:
    def upstream() -> ScriptedUpstream:
        return ScriptedUpstream(statuses=[503], default=200)

    def requests() -> list[Request]:
        return [
            make_request("PUT", "/api/x", authority="reviews", body=MemoryStream([b"ab", b"c"])),
            make_request("POST", "/api/x", authority="reviews", body=MemoryStream([b"d"])),
        ]

    out = await _same(_doc({"retry": {"attempts": 2}}), upstream, requests)
    assert out[0]["attempt"] == 2


async def test_caller_deadline_and_grpc_bypass_are_the_same() -> None:
    def requests() -> list[Request]:
        late = _requests(1, headers=(("x-meshlens-timeout-ms", "0"),))
        short = _requests(1, headers=(("x-meshlens-timeout-ms", "250"),))
        grpc = _requests(1, headers=(("content-type", "application/grpc"),))
        return [*late, *short, *grpc]

    out = await _same(_doc({"retry": {"attempts": 2}}), ScriptedUpstream, requests)
    assert out[0]["attributes"]["meshlens.timeout.fired"] == "caller_deadline"
    assert out[1]["attributes"]["meshlens.timeout.caller_budget_ms"] == 250.0


async def test_a_request_timeout_is_the_same() -> None:
    def upstream() -> ScriptedUpstream:
        return ScriptedUpstream(statuses=[HANG], default=200)

    doc = _doc({"timeout": {"request_s": 0.02}})
    out = await _same(doc, upstream, lambda: _requests(2))
    assert out[0]["outcome"][0] == 504
    assert out[0]["attributes"]["meshlens.timeout.fired"] == "request"
    assert out[1]["outcome"][0] == 200


@pytest.mark.parametrize("max_pending", [0, 1])
async def test_a_breaker_at_its_limit_is_the_same(max_pending: int) -> None:
    limits = {"max_connections": 1, "max_pending": max_pending, "pending_timeout_s": 5}
    observed = []
    for fuse in (True, False):
        gate = Gate()
        rig = Rig(_doc({}, limits=limits), fuse, gate)
        first = asyncio.create_task(rig.send(_requests(1)[0]))
        for _ in range(20):  # the first request reaches the gate within a few loop turns
            if gate.calls:
                break
            await asyncio.sleep(0)
        assert gate.calls == 1
        second = asyncio.create_task(rig.send(_requests(1)[0]))
        for _ in range(5):
            await asyncio.sleep(0)
        rig.clock.advance(0.25)  # time passes while the first is upstream, the second queued
        gate.event.set()
        results = [await first, await second]
        observed.append((results, rig.state(), gate.calls))
    assert observed[0] == observed[1]
    results, _state, calls = observed[0]
    assert results[0]["outcome"][0] == 200
    if max_pending == 0:  # overflow: refused at once
        assert results[1]["outcome"][0] == 503
        assert results[1]["attributes"]["meshlens.breaker.limit"] == "max_connections"
        assert calls == 1
    else:  # queued until the first finished
        assert results[1]["outcome"][0] == 200
        assert results[1]["attributes"]["meshlens.breaker.queued"] is True
        assert calls == 2


def test_routes_the_fused_form_does_not_cover_keep_the_layered_chain() -> None:
    terminal = ScriptedUpstream()
    per_try = _doc({"retry": {"attempts": 2}, "timeout": {"request_s": 2, "per_try_s": 1}})
    observe = _doc({"timeout": {"request_s": 2, "enforce": False}})
    fallback = _doc({"fallback": {"response": {"status": 503, "body": "sorry"}}})
    for doc in (per_try, observe, fallback):
        assert Rig(doc, True, terminal).stack.describe()["fused_routes"] == ["default"]

    stack = build_outbound(
        parse_config(_doc({})), terminal=terminal, per_attempt=[lambda inner: inner]
    )
    assert stack.describe()["fused_routes"] == []  # a per-attempt layer it cannot run


@pytest.mark.parametrize("global_limit", [False, True])
async def test_proxy_generated_errors_are_the_same(global_limit: bool) -> None:
    """Fused (without a global rate limit) every route maps its own ProxyErrors and the
    routing's own (no route) are mapped outside: the same marked responses, reasons, spans and
    metrics as the one proxy_errors layer outside the routing of the layered form."""

    def upstream() -> ScriptedUpstream:
        return ScriptedUpstream(
            statuses=[UpstreamConnectError("refused"), UpstreamReset("reset")], default=200
        )

    def requests() -> list[Request]:
        return [
            *_requests(2),  # the api route (no retry): connect error, reset
            make_request(target="/api/x"),  # no host: no route (raised by the routing)
            make_request(target="/x", authority="elsewhere:0"),  # passthrough refuses it
            *_requests(1, target="/other"),  # default route
            *_requests(2, headers=(("content-type", "application/grpc"),)),  # bypass, mapped
        ]

    doc = _doc({})
    if global_limit:
        doc["ratelimit"] = {"rps": 1, "burst": 6}
    out = await _same(doc, upstream, requests)
    outcomes = [o["outcome"] for o in out]
    assert [o[0] for o in outcomes[:6]] == [503, 502, 404, 404, 200, 200]
    reasons = [dict(o[1]).get(ERROR_HEADER) for o in outcomes]
    assert reasons[:5] == ["connect_failure", "upstream_reset", "no_route", "no_route", None]
    for o, reason in zip(out, reasons, strict=True):
        assert o["attributes"].get("meshlens.error.reason") == reason
    if global_limit:  # the 6th and 7th requests over the global limit
        assert reasons[5:] == [None, "rate_limited"]
