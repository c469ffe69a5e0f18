from __future__ import annotations

import asyncio

import pytest

from sidecar.errors import UpstreamTimeout
from sidecar.http import Response
from sidecar.layers.timeout import DEADLINE_HEADER, TimeoutConfig, timeout_layer
from sidecar.stack import compose
from tests.fakes import HANG, Call, ManualClock, ScriptedUpstream, make_request


async def test_request_timeout_raises_upstream_timeout() -> None:
    handler = compose([timeout_layer(TimeoutConfig(request_s=0.01))], ScriptedUpstream([HANG]))
    request = make_request()

    with pytest.raises(UpstreamTimeout) as caught:
        await handler(request)
    assert caught.value.reason == "upstream_timeout"
    assert request.context.attributes["meshlens.timeout.fired"] == "request"


async def test_sets_deadline_and_idle_timeout_on_the_context() -> None:
    clock = ManualClock(100.0)
    config = TimeoutConfig(request_s=2.0, idle_s=7.0)
    handler = compose([timeout_layer(config, clock=clock)], ScriptedUpstream())
    request = make_request()

    await handler(request)

    assert request.context.deadline == 102.0
    assert request.context.idle_timeout_s == 7.0


async def test_an_earlier_deadline_is_kept() -> None:
    clock = ManualClock(100.0)
    handler = compose([timeout_layer(TimeoutConfig(request_s=5), clock=clock)], ScriptedUpstream())
    request = make_request()
    request.context.deadline = 101.0

    await handler(request)

    assert request.context.deadline == 101.0


async def test_observe_only_records_would_timeout_and_cuts_nothing() -> None:
    clock = ManualClock()
    upstream = ScriptedUpstream(clock=clock, latency_s={"": 3.0})
    config = TimeoutConfig(request_s=1.0, enforce=False)
    handler = compose([timeout_layer(config, clock=clock)], upstream)
    request = make_request()

    assert (await handler(request)).status == 200
    assert request.context.attributes["meshlens.timeout.would_timeout"] is True
    assert request.context.deadline is None


def test_per_try_must_not_exceed_request() -> None:
    with pytest.raises(ValueError, match="per_try_s"):
        TimeoutConfig(request_s=1.0, per_try_s=2.0)
    with pytest.raises(ValueError):
        TimeoutConfig(request_s=0)


def _deadline_header(call: Call) -> str | None:
    return dict(call.headers).get(DEADLINE_HEADER)


async def test_the_budget_is_forwarded_to_the_next_hop() -> None:
    upstream = ScriptedUpstream()
    handler = compose([timeout_layer(TimeoutConfig(request_s=2.5))], upstream)

    await handler(make_request())

    assert _deadline_header(upstream.seen[0]) == "2500"


async def test_a_callers_smaller_budget_shortens_ours() -> None:
    clock = ManualClock(100.0)
    upstream = ScriptedUpstream()
    handler = compose([timeout_layer(TimeoutConfig(request_s=5), clock=clock)], upstream)
    request = make_request(headers=((DEADLINE_HEADER, "800"),))

    await handler(request)

    assert request.context.deadline == 100.8
    assert _deadline_header(upstream.seen[0]) == "800"
    assert request.context.attributes["meshlens.timeout.caller_budget_ms"] == 800

    await handler(make_request(headers=((DEADLINE_HEADER, "9000"),)))
    assert _deadline_header(upstream.seen[1]) == "5000"  # ours is smaller


@pytest.mark.parametrize("theirs", ["\u00b2", "9" * 400, "9" * 5000, "-5", "1.5"])
async def test_a_caller_budget_that_is_no_number_is_ignored(theirs: str) -> None:
    # '\u00b2' passed str.isdigit and int() raised; 400 nines overflowed float, 5,000 int():
    # a 500 and a logged traceback for any client that sent such a header
    upstream = ScriptedUpstream()
    handler = compose([timeout_layer(TimeoutConfig(request_s=2.5))], upstream)
    response = await handler(make_request(headers=((DEADLINE_HEADER, theirs),)))
    assert response.status == 200
    assert _deadline_header(upstream.seen[0]) == "2500"


async def test_an_exhausted_caller_budget_fails_at_once() -> None:
    upstream = ScriptedUpstream()
    handler = compose([timeout_layer(TimeoutConfig())], upstream)

    with pytest.raises(UpstreamTimeout):
        await handler(make_request(headers=((DEADLINE_HEADER, "0"),)))
    assert upstream.calls == 0


async def test_callers_budget_applies_without_a_request_timeout() -> None:
    clock = ManualClock(10.0)
    upstream = ScriptedUpstream()
    config = TimeoutConfig(request_s=None)
    handler = compose([timeout_layer(config, clock=clock)], upstream)
    request = make_request(headers=((DEADLINE_HEADER, "1500"),))

    await handler(request)

    assert request.context.deadline == 11.5


async def test_propagation_can_be_turned_off() -> None:
    clock = ManualClock(10.0)
    upstream = ScriptedUpstream()
    config = TimeoutConfig(request_s=1.0, propagate=False)
    handler = compose([timeout_layer(config, clock=clock)], upstream)
    request = make_request(headers=((DEADLINE_HEADER, "5"),))

    await handler(request)

    assert _deadline_header(upstream.seen[0]) == "5"  # passed on untouched
    assert request.context.deadline == 11.0  # and not honoured


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    handler = compose([timeout_layer(TimeoutConfig(request_s=30.0))], ScriptedUpstream([HANG]))
    request = make_request()

    async def call() -> Response:
        return await handler(request)

    task = asyncio.create_task(call())
    for _ in range(5):  # let it reach the hanging upstream
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "meshlens.timeout.fired" not in request.context.attributes


async def test_the_timer_is_cancelled_when_the_response_arrives() -> None:
    handler = compose([timeout_layer(TimeoutConfig(request_s=0.01))], ScriptedUpstream())
    response = await handler(make_request())
    await asyncio.sleep(0.03)  # past the budget: a leftover timer would cancel this task
    assert response.status == 200
