from __future__ import annotations

import pytest

from sidecar.errors import RateLimited
from sidecar.layers.ratelimit import RateLimitConfig, RateLimiter, ratelimit_layer
from sidecar.stack import compose
from tests.fakes import ManualClock, ScriptedUpstream, make_request


def _handler(config: RateLimitConfig, clock: ManualClock):
    limiter = RateLimiter(config, clock)
    upstream = ScriptedUpstream()
    return compose([ratelimit_layer(config, limiter=limiter)], upstream), limiter, upstream


async def test_token_bucket_allows_burst_then_refills_at_rps() -> None:
    clock = ManualClock()
    handler, limiter, upstream = _handler(RateLimitConfig(rps=2, burst=3), clock)
    for _ in range(3):
        await handler(make_request())
    with pytest.raises(RateLimited):
        await handler(make_request())

    clock.advance(0.5)  # one token at 2 per second
    await handler(make_request())
    with pytest.raises(RateLimited):
        await handler(make_request())
    assert upstream.calls == 4
    assert limiter.stats()["limited"] == 2


async def test_per_identity_buckets_are_independent() -> None:
    clock = ManualClock()
    config = RateLimitConfig(rps=1, burst=1, per_identity=True)
    handler, _, _ = _handler(config, clock)
    await handler(make_request(peer_identity="spiffe://td/ns/a/sa/x"))
    await handler(make_request(peer_identity="spiffe://td/ns/a/sa/y"))

    with pytest.raises(RateLimited):
        await handler(make_request(peer_identity="spiffe://td/ns/a/sa/x"))


async def test_identity_map_is_bounded() -> None:
    clock = ManualClock()
    config = RateLimitConfig(rps=1, burst=1, per_identity=True, max_identities=2)
    handler, limiter, _ = _handler(config, clock)
    for name in ("a", "b", "c", "d"):
        await handler(make_request(peer_identity=name))

    assert limiter.stats()["identities"] == 2
    await handler(make_request(peer_identity="a"))  # evicted, so it starts with a full bucket


async def test_observe_only_lets_everything_through_and_marks_it() -> None:
    clock = ManualClock()
    handler, _, upstream = _handler(RateLimitConfig(rps=1, burst=1, enforce=False), clock)
    await handler(make_request())
    request = make_request()

    assert (await handler(request)).status == 200
    assert request.context.attributes["meshlens.ratelimit.would_limit"] is True
    assert upstream.calls == 2


def test_default_burst_is_one_second_of_tokens() -> None:
    assert RateLimitConfig(rps=50).capacity == 50
    assert RateLimitConfig(rps=0.5).capacity == 1
    with pytest.raises(ValueError):
        RateLimitConfig(rps=0)
