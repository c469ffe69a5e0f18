from __future__ import annotations

import pytest

from sidecar.errors import PerTryTimeout, UpstreamConnectError, UpstreamReset
from sidecar.http import Response
from sidecar.layers.budget import BudgetConfig
from sidecar.layers.retry import RetryConfig, parse_retry_after, retry_layer
from sidecar.stack import compose
from tests.fakes import (
    HANG,
    ManualClock,
    MemoryStream,
    RecordingSleep,
    ScriptedUpstream,
    SequenceRandom,
    make_request,
)

BIG_BUDGET = BudgetConfig(ratio=1.0, min_per_s=1000.0, window_s=10.0)


def _handler(upstream: ScriptedUpstream, config: RetryConfig, clock: ManualClock | None = None):
    clock = clock or ManualClock()
    sleep = RecordingSleep(clock)
    layer = retry_layer(config, clock=clock, sleep=sleep, random=SequenceRandom([0.5]))
    return compose([layer], upstream), sleep


async def test_retry_backs_off_with_full_jitter_then_succeeds() -> None:
    upstream = ScriptedUpstream(statuses=[503, 503, 200])
    handler, sleep = _handler(upstream, RetryConfig(attempts=3, budget=BIG_BUDGET))
    request = make_request()

    response = await handler(request)

    assert response.status == 200
    assert upstream.calls == 3
    assert [c.attempt for c in upstream.seen] == [1, 2, 3]
    # Envoy: retry N waits U[0, (2^N - 1) * 25 ms); random() = 0.5
    assert sleep.calls == pytest.approx([0.0125, 0.0375])
    assert request.context.attributes["meshlens.retry.attempts"] == 3
    assert request.context.attributes["meshlens.retry.reason"] == "gateway-error"


async def test_backoff_is_capped_at_backoff_max() -> None:
    upstream = ScriptedUpstream(statuses=[503] * 5, default=200)
    config = RetryConfig(attempts=6, budget=BIG_BUDGET)
    handler, sleep = _handler(upstream, config)

    await handler(make_request())

    assert sleep.calls == pytest.approx([0.0125, 0.0375, 0.0875, 0.125, 0.125])


async def test_post_is_not_retried_unless_the_route_opts_in() -> None:
    upstream = ScriptedUpstream(statuses=[503, 200])
    handler, _ = _handler(upstream, RetryConfig(attempts=3, budget=BIG_BUDGET))
    request = make_request("POST", body=b"order")

    response = await handler(request)

    assert response.status == 503
    assert upstream.calls == 1
    assert request.context.attributes["meshlens.retry.skipped"] == "non_idempotent"

    upstream = ScriptedUpstream(statuses=[503, 200])
    config = RetryConfig(attempts=3, budget=BIG_BUDGET, allow_non_idempotent=True)
    handler, _ = _handler(upstream, config)
    assert (await handler(make_request("POST", body=b"order"))).status == 200
    assert [c.body for c in upstream.seen] == [b"order", b"order"]


async def test_post_is_retried_after_a_connect_failure_because_it_never_left() -> None:
    upstream = ScriptedUpstream(statuses=[UpstreamConnectError("refused"), 201])
    handler, _ = _handler(upstream, RetryConfig(attempts=2, budget=BIG_BUDGET))

    response = await handler(make_request("POST", body=b"x"))

    assert response.status == 201
    assert upstream.calls == 2


async def test_streamed_body_without_length_is_never_retried() -> None:
    upstream = ScriptedUpstream(statuses=[UpstreamConnectError("refused"), 200])
    handler, _ = _handler(upstream, RetryConfig(attempts=3, budget=BIG_BUDGET))
    request = make_request("PUT", body=MemoryStream([b"a", b"b"], length=None))

    with pytest.raises(UpstreamConnectError):
        await handler(request)

    assert upstream.calls == 1
    assert upstream.seen[0].body is None  # forwarded as the stream, not buffered
    assert request.context.attributes["meshlens.retry.skipped"] == "body_not_buffered"


async def test_streamed_body_over_the_buffer_limit_is_never_retried() -> None:
    upstream = ScriptedUpstream(statuses=[503, 200])
    config = RetryConfig(attempts=3, budget=BIG_BUDGET, max_buffer_bytes=4)
    handler, _ = _handler(upstream, config)

    response = await handler(make_request("PUT", body=MemoryStream([b"12345"])))

    assert response.status == 503
    assert upstream.calls == 1


async def test_small_streamed_body_with_length_is_buffered_and_replayed() -> None:
    upstream = ScriptedUpstream(statuses=[503, 200])
    handler, _ = _handler(upstream, RetryConfig(attempts=3, budget=BIG_BUDGET))
    stream = MemoryStream([b"ab", b"cd"])

    response = await handler(make_request("PUT", body=stream))

    assert response.status == 200
    assert [c.body for c in upstream.seen] == [b"abcd", b"abcd"]


async def test_retry_after_is_honoured() -> None:
    busy = Response(status=503, headers=(("retry-after", "2"),))
    upstream = ScriptedUpstream(statuses=[busy, 200])
    handler, sleep = _handler(upstream, RetryConfig(attempts=2, budget=BIG_BUDGET))

    assert (await handler(make_request())).status == 200
    assert sleep.calls == [2.0]


async def test_retry_after_beyond_the_cap_returns_the_response() -> None:
    busy = Response(status=503, headers=(("retry-after", "120"),))
    upstream = ScriptedUpstream(statuses=[busy, 200])
    handler, sleep = _handler(upstream, RetryConfig(attempts=2, budget=BIG_BUDGET))
    request = make_request()

    response = await handler(request)

    assert response is busy
    assert sleep.calls == []
    assert request.context.attributes["meshlens.retry.skipped"] == "retry_after_too_long"


def test_parse_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7", 0.0) == 7.0
    # Sun, 06 Nov 1994 08:49:37 GMT = 784111777
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111770.0) == 7.0
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after("\u00b2", 0.0) is None  # (isdigit, then float() raised)


async def test_budget_exhaustion_returns_the_last_response() -> None:
    # ratio 0 => only the reserve: min_per_s * window_s = 1 retry in the window
    budget = BudgetConfig(ratio=0.0, min_per_s=0.1, window_s=10.0)
    upstream = ScriptedUpstream(statuses=[503, 200, 503], default=503)
    handler, _ = _handler(upstream, RetryConfig(attempts=3, budget=budget))

    first = await handler(make_request())
    request = make_request()
    second = await handler(request)

    assert first.status == 200  # spent the one retry
    assert second.status == 503
    assert upstream.calls == 3
    assert request.context.attributes["meshlens.retry.budget_exhausted"] is True


async def test_budget_exhaustion_raises_the_last_error() -> None:
    budget = BudgetConfig(ratio=0.0, min_per_s=0.0, window_s=10.0)
    upstream = ScriptedUpstream(statuses=[UpstreamReset("reset")])
    handler, _ = _handler(upstream, RetryConfig(attempts=3, budget=budget))
    request = make_request()

    with pytest.raises(UpstreamReset):
        await handler(request)
    assert request.context.attributes["meshlens.retry.budget_exhausted"] is True


async def test_last_error_is_raised_when_attempts_run_out() -> None:
    upstream = ScriptedUpstream(statuses=[UpstreamReset("a"), UpstreamReset("b")])
    handler, _ = _handler(upstream, RetryConfig(attempts=2, budget=BIG_BUDGET))
    request = make_request()

    with pytest.raises(UpstreamReset, match="b"):
        await handler(request)
    assert request.context.attributes["meshlens.retry.skipped"] == "max_attempts"


async def test_per_try_timeout_is_retried() -> None:
    upstream = ScriptedUpstream(statuses=[HANG, 200])
    config = RetryConfig(attempts=2, budget=BIG_BUDGET, per_try_s=0.01)
    handler, _ = _handler(upstream, config)
    request = make_request()

    assert (await handler(request)).status == 200
    assert request.context.attributes["meshlens.retry.reason"] == "per-try-timeout"


async def test_per_try_timeout_on_the_last_attempt_raises() -> None:
    upstream = ScriptedUpstream(statuses=[HANG])
    handler, _ = _handler(upstream, RetryConfig(attempts=1, per_try_s=0.01))

    with pytest.raises(PerTryTimeout):
        await handler(make_request())


async def test_no_retry_when_backoff_would_pass_the_deadline() -> None:
    clock = ManualClock()
    upstream = ScriptedUpstream(statuses=[503, 200])
    handler, sleep = _handler(upstream, RetryConfig(attempts=2, budget=BIG_BUDGET), clock)
    request = make_request()
    request.context.deadline = clock() + 0.001  # backoff is 12.5 ms

    assert (await handler(request)).status == 503
    assert request.context.attributes["meshlens.retry.skipped"] == "deadline"
    assert sleep.calls == []


async def test_observe_only_records_would_retry_and_never_retries() -> None:
    upstream = ScriptedUpstream(statuses=[503, 200])
    config = RetryConfig(attempts=3, budget=BIG_BUDGET, enforce=False)
    handler, _ = _handler(upstream, config)
    request = make_request()

    assert (await handler(request)).status == 503
    assert upstream.calls == 1
    assert request.context.attributes["meshlens.retry.would_retry"] == "gateway-error"


async def test_listed_statuses_and_5xx_conditions() -> None:
    upstream = ScriptedUpstream(statuses=[409, 500, 200])
    config = RetryConfig(attempts=3, on=frozenset({"5xx"}), statuses=frozenset({409}))
    handler, _ = _handler(upstream, config)

    assert (await handler(make_request())).status == 200
    assert upstream.calls == 3

    upstream = ScriptedUpstream(statuses=[500, 200])
    handler, _ = _handler(upstream, RetryConfig(attempts=3))  # default: gateway-error only
    assert (await handler(make_request())).status == 500


async def test_endpoints_of_each_attempt_are_remembered() -> None:
    from sidecar.http import Endpoint

    endpoints = iter([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)])
    upstream = ScriptedUpstream(statuses=[503, 200])

    async def pick(request):  # stands in for the balancer below retry
        request.context.endpoint = next(endpoints)
        return await upstream(request)

    clock = ManualClock()
    layer = retry_layer(RetryConfig(attempts=2), clock=clock, sleep=RecordingSleep(clock))
    request = make_request()
    await compose([layer], pick)(request)

    assert [e.address for e in request.context.previous_endpoints] == [
        "10.0.0.1:80",
        "10.0.0.2:80",
    ]


def test_retry_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryConfig(attempts=0)
    with pytest.raises(ValueError, match="unknown retry conditions"):
        RetryConfig(on=frozenset({"sometimes"}))
    with pytest.raises(ValueError, match="backoff"):
        RetryConfig(backoff_base_ms=500, backoff_max_ms=100)


async def test_a_truncated_streamed_body_is_a_bad_request() -> None:
    from sidecar.errors import BadRequest

    upstream = ScriptedUpstream()
    handler, _ = _handler(upstream, RetryConfig(attempts=2))

    with pytest.raises(BadRequest, match="shorter"):
        await handler(make_request("PUT", body=MemoryStream([b"ab"], length=5)))
    with pytest.raises(BadRequest, match="longer"):
        await handler(make_request("PUT", body=MemoryStream([b"abcdef"], length=5)))
    assert upstream.calls == 0


@pytest.mark.parametrize("status", [200, 404, 429, 500, 502, 503, 504])
@pytest.mark.parametrize("grpc", [None, "14", "0"])
def test_final_is_reason_none_and_the_reason_asked_next_is_the_same(
    status: int, grpc: str | None
) -> None:
    from sidecar.layers.retry import Retry

    clock = ManualClock()
    config = RetryConfig(statuses=frozenset({429}))
    retry = Retry(config, clock, RecordingSleep(clock), lambda: 0.5, clock, None)
    headers = () if grpc is None else (("grpc-status", grpc),)
    response = Response(status, headers, b"")
    fresh = retry.reason(response)
    assert retry.final(response) is (fresh is None)
    assert retry.reason(response) == fresh  # (answered from `final` once, then computed)
    assert retry.reason(response) == fresh
