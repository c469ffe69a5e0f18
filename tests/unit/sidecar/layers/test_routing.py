from __future__ import annotations

import pytest

from sidecar.errors import NoRoute
from sidecar.http import Request, Response
from sidecar.layers.routing import (
    Destination,
    HeaderMatch,
    MatchConfig,
    RouteRule,
    RoutingConfig,
    passthrough_layer,
    routing_layer,
    split_authority,
)
from sidecar.stack import Handler, Layer, compose
from tests.fakes import ScriptedUpstream, SequenceRandom, make_request


def _tag(name: str) -> Layer:
    """A per-route stack that stamps which route stack ran."""

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            request.context.attributes["ran"] = name
            return await inner(request)

        return handle

    return wrap


RULES = (
    RouteRule(
        "canary",
        MatchConfig(headers=(HeaderMatch("x-canary", exact="yes"),)),
        (Destination("reviews-v2"),),
    ),
    RouteRule(
        "beta-users",
        MatchConfig(hosts=frozenset({"reviews"}), headers=(HeaderMatch("x-user", regex="b.*"),)),
        (Destination("reviews-v2"),),
    ),
    RouteRule(
        "writes",
        MatchConfig(hosts=frozenset({"reviews"}), methods=frozenset({"POST", "PUT"})),
        (Destination("reviews-v1"),),
    ),
    RouteRule(
        "api",
        MatchConfig(hosts=frozenset({"reviews"}), path_prefix="/api/"),
        (Destination("reviews-v1", 90), Destination("reviews-v2", 10)),
    ),
    RouteRule(
        "anything", MatchConfig(hosts=frozenset({"*"}), path_prefix="/any"), (Destination("db"),)
    ),
)
SERVICES = frozenset({"reviews-v1", "reviews-v2", "db"})


def _handler(policy: str = "allow_any", random=None):
    config = RoutingConfig(routes=RULES, services=SERVICES, outbound_policy=policy)
    layer = routing_layer(
        config,
        {rule.name: _tag(rule.name) for rule in RULES},
        default_route=_tag("default"),
        passthrough=_chain_passthrough(),
        random=random or SequenceRandom([0.5]),
    )
    upstream = ScriptedUpstream()
    return compose([layer], upstream), upstream


def _chain_passthrough() -> Layer:
    def wrap(inner: Handler) -> Handler:
        return _tag("passthrough")(passthrough_layer()(inner))

    return wrap


async def _route(handler, **kwargs) -> Request:
    request = make_request(**kwargs)
    await handler(request)
    return request


async def test_first_matching_route_wins_on_host_header_method_and_path() -> None:
    handler, _ = _handler()

    cases = [
        (dict(authority="reviews-v2", headers=(("x-canary", "yes"),)), "canary"),
        (dict(authority="reviews", headers=(("x-user", "bob"),)), "beta-users"),
        (dict(authority="reviews", headers=(("x-user", "alice"),), method="PUT"), "writes"),
        (dict(authority="reviews:9080", target="/api/v1?x=1"), "api"),
        (dict(authority="anything.example:8080", target="/any/thing"), "anything"),
    ]
    for kwargs, expected in cases:
        request = await _route(handler, **kwargs)
        assert request.context.route == expected, kwargs
        assert request.context.attributes["ran"] == expected
        assert request.context.attributes["meshlens.route"] == expected


async def test_route_hosts_default_to_its_destination_upstreams() -> None:
    handler, _ = _handler()

    request = await _route(handler, authority="db", headers=(("x-canary", "yes"),))

    assert request.context.route == "default"  # canary only matches host reviews-v2


async def test_weighted_split_uses_the_injected_random() -> None:
    handler, _ = _handler(random=SequenceRandom([0.0, 0.89, 0.9, 0.99]))

    upstreams = [
        (await _route(handler, authority="reviews", target="/api/x")).context.upstream
        for _ in range(4)
    ]

    assert upstreams == ["reviews-v1", "reviews-v1", "reviews-v2", "reviews-v2"]


async def test_configured_service_without_matching_route_takes_the_default_route() -> None:
    handler, _ = _handler()

    request = await _route(handler, authority="DB:5432", target="/q")

    assert request.context.route == "default"
    assert request.context.upstream == "db"
    assert request.context.attributes["meshlens.upstream"] == "db"


async def test_unknown_host_port_is_passed_through() -> None:
    handler, upstream = _handler()

    request = await _route(handler, authority="example.com:8443")

    assert request.context.route == "passthrough"
    assert upstream.seen[0].endpoint.address == "example.com:8443"


async def test_unknown_host_is_no_route_when_registry_only() -> None:
    handler, upstream = _handler(policy="registry_only")

    with pytest.raises(NoRoute):
        await handler(make_request(authority="example.com:8443"))
    assert upstream.calls == 0


async def test_unmatched_request_for_a_host_claimed_by_routes_is_no_route() -> None:
    handler, _ = _handler(policy="allow_any")

    with pytest.raises(NoRoute):
        await handler(make_request(authority="reviews", target="/other"))


def test_split_authority() -> None:
    assert split_authority("Svc:80") == ("svc", 80)
    assert split_authority("svc") == ("svc", 80)
    assert split_authority("svc", "https") == ("svc", 443)
    assert split_authority("[::1]:8080") == ("::1", 8080)
    assert split_authority("svc:http") == ("svc", None)


def test_routing_config_validates() -> None:
    with pytest.raises(ValueError, match="unique"):
        RoutingConfig(routes=(RULES[0], RULES[0]))
    with pytest.raises(ValueError, match="exactly one"):
        HeaderMatch("x-a")
    with pytest.raises(ValueError):
        Destination("a", weight=0)


@pytest.mark.timeout(20)
def test_a_header_regex_is_matched_in_linear_time() -> None:
    # with Python's re, (a+)+$ against 40 a's and a '!' backtracks ~2**40 steps (0.4 s at 24,
    # doubling per character): one request held the event loop, and all traffic, for hours
    match = HeaderMatch("x-user", regex="(a+)+$")
    evil = make_request(headers=(("x-user", "a" * 40 + "!"),))
    long = make_request(headers=(("x-user", "a" * 60_000),))

    assert not match.matches(evil)
    assert match.matches(long)
    assert HeaderMatch("x-user", regex=r"^(\w+\s?)*$").matches(
        make_request(headers=(("x-user", "ann b"),))
    )


def test_a_regex_re2_cannot_run_in_linear_time_is_refused() -> None:
    for pattern in (r"(a)\1", "(?=a)a", "(?<!a)b"):
        with pytest.raises(ValueError, match="RE2 syntax"):
            HeaderMatch("x-user", regex=pattern)
