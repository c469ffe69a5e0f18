"""Per-route fallback: listed upstream failures get the configured response or the fallback
service; everything else passes through untouched; fallbacks are marked and counted."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.build import build_outbound
from sidecar.config import ConfigError, parse_config
from sidecar.errors import (
    CircuitOpen,
    NoHealthyUpstream,
    Overflow,
    UpstreamConnectError,
    UpstreamTimeout,
)
from sidecar.http import Response, header_value
from sidecar.layers.fallback import (
    FALLBACK_HEADER,
    FallbackConfig,
    FallbackResponse,
    FallbackStats,
    fallback_layer,
)
from sidecar.stack import compose
from tests.fakes import ManualClock, MemoryStream, RecordingSleep, ScriptedUpstream, make_request

CANNED = FallbackResponse(200, (("content-type", "application/json"),), b'{"items":[]}')


@pytest.mark.parametrize("error", [CircuitOpen(), NoHealthyUpstream(), Overflow()])
async def test_a_listed_failure_gets_the_canned_response_marked_as_fallback(
    error: Exception,
) -> None:
    stats = FallbackStats()
    upstream = ScriptedUpstream([error])
    handler = compose([fallback_layer(FallbackConfig(response=CANNED), stats=stats)], upstream)
    request = make_request()

    response = await handler(request)

    assert response.status == 200 and response.body == b'{"items":[]}'
    assert header_value(response.headers, "content-type") == "application/json"
    reason = getattr(error, "reason")  # noqa: B009
    assert header_value(response.headers, FALLBACK_HEADER) == reason
    assert request.context.attributes["meshlens.fallback"] is True
    assert request.context.attributes["meshlens.fallback.reason"] == reason
    assert stats.snapshot() == {"taken": {reason: 1}, "skipped": 0}


async def test_unlisted_failures_and_application_errors_pass_through() -> None:
    upstream = ScriptedUpstream([UpstreamConnectError(), 503])
    handler = compose([fallback_layer(FallbackConfig(response=CANNED))], upstream)
    with pytest.raises(UpstreamConnectError):
        await handler(make_request())
    response = await handler(make_request())
    assert response.status == 503 and header_value(response.headers, FALLBACK_HEADER) is None


async def test_a_fallback_service_gets_the_request_with_a_fresh_attempt_state() -> None:
    service = ScriptedUpstream([Response(200, body=b"from backup")])
    upstream = ScriptedUpstream([NoHealthyUpstream()])
    config = FallbackConfig(upstream="backup")
    handler = compose([fallback_layer(config, service=service)], upstream)
    request = make_request("POST", "/orders", body=b"{}", upstream="orders")
    request.context.attempt = 3

    response = await handler(request)

    assert response.body == b"from backup"
    assert header_value(response.headers, FALLBACK_HEADER) == "no_healthy_upstream"
    assert service.seen[0].body == b"{}" and service.seen[0].attempt == 1
    assert request.context.upstream == "backup"
    assert request.context.attributes["meshlens.fallback.upstream"] == "backup"


async def test_a_consumed_streamed_body_is_not_resent_to_the_fallback_service() -> None:
    stats = FallbackStats()
    service = ScriptedUpstream()
    handler = compose(
        [fallback_layer(FallbackConfig(upstream="backup"), service=service, stats=stats)],
        ScriptedUpstream([CircuitOpen()]),
    )
    request = make_request("POST", body=MemoryStream([b"a", b"b"]))
    request.context.attempt = 2  # a retry already read the stream
    with pytest.raises(CircuitOpen):
        await handler(request)
    assert service.calls == 0 and stats.skipped == 1


async def test_a_streamed_body_not_yet_read_goes_to_the_fallback_service() -> None:
    service = ScriptedUpstream()
    config = FallbackConfig(on=frozenset({"overflow", "upstream_timeout"}), upstream="backup")
    handler = compose(
        [fallback_layer(config, service=service)],
        ScriptedUpstream([Overflow(), UpstreamTimeout()]),
    )
    response = await handler(make_request("POST", body=MemoryStream([b"a"])))
    assert response.status == 200 and service.calls == 1
    with pytest.raises(UpstreamTimeout):  # a timed-out attempt may have read the stream
        await handler(make_request("POST", body=MemoryStream([b"a"])))
    assert service.calls == 1


def test_fallback_config_is_validated() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        FallbackConfig()
    with pytest.raises(ValueError, match="exactly one"):
        FallbackConfig(response=CANNED, upstream="x")
    with pytest.raises(ValueError, match="rate_limited"):
        FallbackConfig(on=frozenset({"rate_limited"}), response=CANNED)
    with pytest.raises(ValueError, match="lower-case"):
        FallbackResponse(headers=(("X-A", "1"),))


def _doc(fallback: dict[str, Any], orders: list[str] | None = None) -> dict[str, Any]:
    return {
        "upstreams": {
            "orders": {"endpoints": orders or []},
            "backup": {"endpoints": ["10.0.0.9:80"]},
        },
        "routes": [
            {
                "name": "orders",
                "match": {"hosts": ["orders"]},
                "destinations": [{"upstream": "orders"}],
                "fallback": fallback,
            }
        ],
    }


async def test_built_route_with_no_endpoints_answers_from_its_fallback_service() -> None:
    clock = ManualClock()
    terminal = ScriptedUpstream()
    stack = build_outbound(
        parse_config(_doc({"upstream": "backup"})),
        terminal=terminal,
        clock=clock,
        sleep=RecordingSleep(clock),
    )
    request = make_request(authority="orders")

    response = await stack.handler(request)

    assert response.status == 200
    assert header_value(response.headers, FALLBACK_HEADER) == "no_healthy_upstream"
    endpoint = terminal.seen[0].endpoint
    assert endpoint is not None and endpoint.address == "10.0.0.9:80"
    assert stack.stats()["routes"]["orders"]["fallback"]["taken"] == {"no_healthy_upstream": 1}


async def test_built_route_answers_a_canned_response_and_keeps_counts_across_reloads() -> None:
    doc = _doc({"response": {"status": 503, "headers": {"Retry-After": "5"}, "body": "later"}})
    stack = build_outbound(parse_config(doc), terminal=ScriptedUpstream())
    response = await stack.handler(make_request(authority="orders"))
    assert response.status == 503 and response.body == b"later"
    assert header_value(response.headers, "retry-after") == "5"
    again = build_outbound(parse_config(doc), terminal=ScriptedUpstream(), previous=stack)
    await again.handler(make_request(authority="orders"))
    assert again.stats()["routes"]["orders"]["fallback"]["taken"] == {"no_healthy_upstream": 2}


def test_a_fallback_to_an_unknown_upstream_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"fallback.upstream: unknown upstream 'nowhere'"):
        parse_config(_doc({"upstream": "nowhere"}))
    with pytest.raises(ConfigError, match="exactly one of response or upstream"):
        parse_config(_doc({}))


async def test_an_observe_only_fallback_lets_the_failure_through_and_records_it() -> None:
    stats = FallbackStats()
    upstream = ScriptedUpstream([Overflow()])
    config = FallbackConfig(response=CANNED, enforce=False)
    handler = compose([fallback_layer(config, stats=stats)], upstream)
    request = make_request()

    with pytest.raises(Overflow):
        await handler(request)

    assert request.context.attributes["meshlens.fallback.would_serve"] == "overflow"
    assert "meshlens.fallback" not in request.context.attributes
    assert stats.snapshot() == {"taken": {}, "skipped": 0, "observed": {"overflow": 1}}


def test_the_config_carries_the_fallback_enforce_switch() -> None:
    doc: dict[str, Any] = {
        "service": "web",
        "upstreams": {"api": {"endpoints": ["127.0.0.1:9"]}},
        "routes": [
            {
                "name": "api",
                "match": {"hosts": ["api"]},
                "destinations": [{"upstream": "api"}],
                "fallback": {"response": {"status": 503}, "enforce": False},
            }
        ],
    }
    route = parse_config(doc).routes[0]
    assert route.fallback is not None and route.fallback.enforce is False
