from __future__ import annotations

from collections import Counter
from pathlib import Path

from sidecar.build import build_inbound, build_outbound, static_endpoints
from sidecar.config import load_config, parse_config
from sidecar.errors import ERROR_HEADER, UpstreamConnectError
from sidecar.http import Endpoint, Request, Response, header_value
from sidecar.stack import Handler, Layer
from tests.fakes import ManualClock, RecordingSleep, ScriptedUpstream, SequenceRandom, make_request

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "sidecar.yaml"
A, B = "10.0.0.1:80", "10.0.0.2:80"


def _doc(**route_extra) -> dict:
    return {
        "version": "v1",
        "upstreams": {
            "reviews": {
                "endpoints": [A, B],
                "lb": "least_request",  # with the fixed random, A unless A is avoided
                "outlier": {"consecutive_5xx": 3, "success_rate": None, "max_ejection_percent": 50},
            },
        },
        "routes": [
            {
                "name": "reviews-api",
                "match": {"path_prefix": "/api/"},
                "destinations": [{"upstream": "reviews"}],
                "retry": {"attempts": 2},
                **route_extra,
            }
        ],
    }


def _recorder(name: str, log: list[str]) -> Layer:
    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            log.append(f"{name}:{request.context.attempt}")
            return await inner(request)

        return handle

    return wrap


def _build(doc: dict, upstream: ScriptedUpstream, log: list[str] | None = None):
    clock = ManualClock()
    log = log if log is not None else []
    return build_outbound(
        parse_config(doc),
        terminal=upstream,
        outer=[_recorder("outer", log)],
        per_attempt=[_recorder("attempt", log)],
        clock=clock,
        sleep=RecordingSleep(clock),
        random=SequenceRandom([0.3]),
    )


async def test_retry_goes_to_another_endpoint_and_each_attempt_passes_per_attempt_layers() -> None:
    log: list[str] = []
    upstream = ScriptedUpstream(by_endpoint={A: [503], B: [503]}, default=200)
    stack = _build(_doc(), upstream, log)
    request = make_request(authority="reviews", target="/api/list")

    response = await stack.handler(request)

    assert response.status == 503
    assert upstream.addresses() == [A, B]  # the retry avoided the first endpoint
    assert log == ["outer:1", "attempt:1", "attempt:2"]
    assert request.context.route == "reviews-api"
    assert request.context.upstream == "reviews"


async def test_proxy_errors_become_marked_responses() -> None:
    upstream = ScriptedUpstream(default=UpstreamConnectError("refused"))
    stack = _build(_doc(), upstream)

    response = await stack.handler(make_request(authority="reviews", target="/api/x"))

    assert response.status == 503
    assert header_value(response.headers, ERROR_HEADER) == "connect_failure"
    assert upstream.calls == 2


async def test_unknown_host_passes_through_unless_registry_only() -> None:
    upstream = ScriptedUpstream()
    stack = _build(_doc(), upstream)

    await stack.handler(make_request(authority="example.org:8080"))
    assert upstream.seen[-1].endpoint == Endpoint("example.org", 8080, service="example.org")

    stack = _build({**_doc(), "outbound_policy": "registry_only"}, upstream)
    response = await stack.handler(make_request(authority="example.org:8080"))
    assert response.status == 404
    assert header_value(response.headers, ERROR_HEADER) == "no_route"


async def test_configured_service_off_route_takes_the_default_route() -> None:
    upstream = ScriptedUpstream()
    stack = _build(_doc(), upstream)
    request = make_request(authority="reviews:9080", target="/other")

    assert (await stack.handler(request)).status == 200
    assert request.context.route == "default"
    assert upstream.seen[0].endpoint is not None
    assert upstream.seen[0].endpoint.address in (A, B)


async def test_outlier_ejection_steers_traffic_away_from_a_failing_endpoint() -> None:
    upstream = ScriptedUpstream(by_endpoint={A: [500] * 1000}, default=200)
    doc = _doc(retry=None)
    stack = _build(doc, upstream)

    for _ in range(20):
        await stack.handler(make_request(authority="reviews", target="/api/x"))

    counts = Counter(upstream.addresses())
    assert counts[A] == 3  # ejected after three consecutive 5xx
    stats = stack.stats()["upstreams"]["reviews"]
    assert stats["outlier"]["endpoints"][A]["state"] == "open"
    assert [e["available"] for e in stats["balancer"]["endpoints"]] == [False, True]


async def test_route_ratelimit_and_fault_are_applied() -> None:
    doc = _doc(ratelimit={"rps": 1, "burst": 1}, fault={"abort": {"status": 418, "percent": 100}})
    stack = _build(doc, ScriptedUpstream())

    first = await stack.handler(make_request(authority="reviews", target="/api/x"))
    second = await stack.handler(make_request(authority="reviews", target="/api/x"))

    assert first.status == 418
    assert header_value(first.headers, ERROR_HEADER) == "fault_abort"
    assert second.status == 429


async def test_stats_and_describe_report_the_live_state() -> None:
    stack = _build(_doc(), ScriptedUpstream())
    await stack.handler(make_request(authority="reviews", target="/api/x"))

    stats = stack.stats()
    described = stack.describe()

    assert stats["version"] == "v1" == stack.version
    assert stats["routes"]["reviews-api"]["retry_budget"]["ratio"] == 0.2
    assert stats["upstreams"]["reviews"]["breaker"]["state"] == "closed"
    assert sum(e["requests"] for e in stats["upstreams"]["reviews"]["balancer"]["endpoints"]) == 1
    assert described["config"]["routes"][0]["name"] == "reviews-api"
    assert described["order"][0] == "outer"
    await stack.close()


async def test_inbound_stack_applies_timeout_ratelimit_and_targets_the_app() -> None:
    doc = {"service": "reviews", "inbound": {"ratelimit": {"rps": 1, "burst": 1}}}
    upstream = ScriptedUpstream()
    app = Endpoint("127.0.0.1", 9080)
    clock = ManualClock()
    stack = build_inbound(parse_config(doc), terminal=upstream, app=app, clock=clock)
    request = make_request()

    assert (await stack.handler(request)).status == 200
    assert (await stack.handler(make_request())).status == 429
    assert upstream.seen[0].endpoint == app
    assert request.context.deadline == clock() + 15.0
    assert stack.stats()["ratelimit"]["limited"] == 1


async def test_builds_with_defaults_and_from_the_example_file() -> None:
    upstream = ScriptedUpstream()
    stack = build_outbound(None, terminal=upstream)
    assert (await stack.handler(make_request(authority="localhost:8080"))).status == 200
    assert (await build_inbound(None, terminal=upstream).handler(make_request())).status == 200

    config = load_config(EXAMPLE)
    stack = build_outbound(config, endpoints=static_endpoints(config), terminal=upstream)
    request = make_request(authority="reviews", headers=(("x-canary", "true"),))
    await stack.handler(request)
    assert request.context.upstream == "reviews-v2"
    assert set(stack.stats()["upstreams"]) == {"reviews-v1", "reviews-v2", "ratings"}


async def test_a_reload_keeps_the_state_of_unchanged_upstreams_and_routes() -> None:
    upstream = ScriptedUpstream(by_endpoint={A: [500] * 1000}, default=200)
    clock = ManualClock()
    doc = _doc(retry=None, ratelimit={"rps": 100, "burst": 5})
    v1 = build_outbound(
        parse_config(doc), terminal=upstream, clock=clock, random=SequenceRandom([0.3])
    )
    for _ in range(5):
        await v1.handler(make_request(authority="reviews", target="/api/x"))

    doc2 = {**doc, "version": "v2", "routes": [{**doc["routes"][0], "timeout": {"request_s": 3}}]}
    v2 = build_outbound(parse_config(doc2), terminal=upstream, clock=clock, previous=v1)

    reviews = v2.stats()["upstreams"]["reviews"]
    assert upstream.addresses() == [A, A, A, B, B]
    assert reviews["outlier"]["endpoints"][A]["state"] == "open"
    assert sum(e["requests"] for e in reviews["balancer"]["endpoints"]) == 5
    assert v2.stats()["routes"]["reviews-api"]["ratelimit"]["allowed"] == 5
    response = await v2.handler(make_request(authority="reviews", target="/api/x"))
    assert response.status == 429  # the bucket's burst of 5 was spent under v1

    doc3 = {**doc2, "upstreams": {"reviews": {**doc["upstreams"]["reviews"], "lb": "round_robin"}}}
    v3 = build_outbound(parse_config(doc3), terminal=upstream, clock=clock, previous=v2)
    assert v3.stats()["upstreams"]["reviews"]["outlier"]["endpoints"][A]["state"] == "closed"


async def test_passthrough_refuses_the_sidecars_own_listeners() -> None:
    upstream = ScriptedUpstream()
    stack = build_outbound(None, terminal=upstream, own_addresses=[("127.0.0.1", 15001)])

    response = await stack.handler(make_request(authority="127.0.0.1:15001"))

    assert response.status == 404
    assert upstream.calls == 0
    assert (await stack.handler(make_request(authority="127.0.0.1:8080"))).status == 200


async def test_deadline_header_goes_to_mesh_services_but_not_outside() -> None:
    upstream = ScriptedUpstream()
    stack = _build(_doc(), upstream)

    await stack.handler(make_request(authority="reviews", target="/api/x"))
    await stack.handler(make_request(authority="example.org:80"))

    assert header_value(upstream.seen[0].headers, "x-meshlens-timeout-ms") == "15000"
    assert header_value(upstream.seen[1].headers, "x-meshlens-timeout-ms") is None


async def test_inbound_authz_sits_after_the_rate_limit_and_refuses_named_callers() -> None:
    doc = {
        "service": "reviews",
        "inbound": {"ratelimit": {"rps": 1, "burst": 2}},
        "authz": {
            "rules": [
                {
                    "name": "no-batch",
                    "action": "deny",
                    "principals": ["spiffe://example.org/ns/jobs/*"],
                }
            ]
        },
    }
    upstream = ScriptedUpstream()
    stack = build_inbound(parse_config(doc), terminal=upstream, clock=ManualClock())
    batch = "spiffe://example.org/ns/jobs/sa/batch"

    denied = await stack.handler(make_request(peer_identity=batch))
    allowed = await stack.handler(make_request(peer_identity="spiffe://example.org/ns/a/sa/web"))
    # The denied call spent a token: the rate limit sheds load before authorization runs.
    limited = await stack.handler(make_request(peer_identity=batch))

    assert [denied.status, allowed.status, limited.status] == [403, 200, 429]
    assert upstream.calls == 1
    assert stack.describe()["order"][2:4] == ["ratelimit", "authz"]
