"""A route's layers fused into one coroutine: ratelimit, fault, timeout, retry, the per-attempt
stage (telemetry's attempt span), balance, breaker and outlier, then the terminal.

The layered chain (sidecar/build.py, the order of sidecar/stack.py) awaits one coroutine per
layer on every request; this runs the same code of each layer in one frame, in the same order,
with the same state (limiter, budget, balancers, breakers, detectors, the same clock and random
draws). What the fused frame does not do itself, it hands to the layered chain:
- a request some attempt stage must see in full (gRPC: `AttemptStage.bypass`) takes the route's
  full chain from the start;
- an attempt whose outcome is retry-eligible goes on in `Retry.resume`, whose further attempts
  run through the layered per-attempt chain (attempt span, balance, breaker, outlier).
Routes the fused form does not cover (fallback, per-try timeout, observe-only timeout, attempt
stages it cannot run) keep the layered chain: sidecar/build.py decides (`_Policies.fused`).

The first attempt's response, when final (no retry for it), may already be downstream when
this frame resumes (RequestContext.final, set around that attempt): the HTTP/1.1 pool writes a
whole final response as it arrives, and the work after it here (outlier, balancer, the attempt
span) runs right after that write and reads its clock then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from sidecar.errors import NoRoute, ProxyError, UpstreamTimeout
from sidecar.http import DeadlineQueue, Request, Response
from sidecar.layers.balance import Balancer
from sidecar.layers.breaker import Breaker
from sidecar.layers.fault import Fault
from sidecar.layers.outlier import OutlierDetector
from sidecar.layers.proxy_errors import map_error
from sidecar.layers.ratelimit import RateLimiter
from sidecar.layers.retry import Retry
from sidecar.layers.timeout import (
    TimeoutConfig,
    arm_deadline,
    deadline_budget,
    deadline_fired,
    deadline_tail,
)
from sidecar.stack import AttemptStage, Clock, Handler, Sleep

__all__ = ["UpstreamUnit", "fused_route", "fusible_stages"]


class UpstreamUnit:
    """The per-attempt state of one upstream: its balancer, breaker and outlier detector."""

    __slots__ = ("balancer", "breaker", "detector")

    def __init__(
        self, balancer: Balancer, breaker: Breaker | None, detector: OutlierDetector | None
    ) -> None:
        self.balancer = balancer
        self.breaker = breaker
        self.detector = detector


def _always_final(response: Response) -> bool:
    """A route without retries: its first response is its last."""
    return True


def fusible_stages(stages: Sequence[object]) -> bool:
    """True when a fused route can run these per-attempt layers: all AttemptStages, at most
    one of them doing anything (begin/end/fail) for the requests it does not bypass."""
    if not all(isinstance(stage, AttemptStage) for stage in stages):
        return False
    return sum(1 for s in stages if isinstance(s, AttemptStage) and not s.passive) <= 1


def fused_route(
    *,
    full: Handler,
    full_attempt: Handler,
    terminal: Handler,
    units: Mapping[str, UpstreamUnit],
    stages: Sequence[AttemptStage],
    timeout: TimeoutConfig,
    retry: Retry | None,
    limiter: RateLimiter | None,
    fault: Fault | None,
    clock: Clock,
    sleep: Sleep,
    map_errors: bool = False,
) -> Handler:
    """The route's handler: `full` is its layered chain, `full_attempt` the layered per-attempt
    chain (stages, balance, breaker, outlier, `terminal`), `units` by upstream name.

    `map_errors`: a `ProxyError` the route ends with becomes its marked response here, as the
    proxy_errors layer outside the routing would make it (`full` must map its own then)."""
    active = [s for s in stages if not s.passive]
    assert len(active) <= 1, "fusible_stages() first"
    stage = active[0] if active else None
    bypassers = tuple(s for s in stages if s.may_bypass)
    request_s, idle_s, propagate = timeout.request_s, timeout.idle_s, timeout.propagate
    tail = deadline_tail(request_s)
    assert timeout.enforce, "an observe-only timeout is not fused"
    assert retry is None or retry.config.per_try_s is None, "a per-try timeout is not fused"
    budget = retry.budget if retry is not None else None
    queue = DeadlineQueue()  # the deadline timers of this route's requests
    # The first attempt's response is final (RequestContext.final: it may go downstream as it
    # arrives, before this frame's work on it) when nothing here would replace it: the attempt
    # stage returns a whole response as it is and the retry policy would not retry it. (The
    # layers outside a route return a whole response as they get it; a fallback route, which
    # replaces responses, is never fused.)
    final: Callable[[Response], bool] | None = None
    if stage is None or stage.keeps_whole:
        final = retry.final if retry is not None else _always_final

    async def run(request: Request) -> Response:
        try:
            context = request.context
            # -- ratelimit (layers/ratelimit.py), fault (layers/fault.py) --
            if limiter is not None:
                limiter.check(request)
            if fault is not None:
                delay_s = fault.delay(request)
                if delay_s is not None:
                    await sleep(delay_s)
                fault.abort(request)
            # -- timeout (layers/timeout.py) --
            request, budget_s = deadline_budget(request, request_s, idle_s, propagate, tail)
            timer = arm_deadline(context, budget_s, clock, queue) if budget_s is not None else None
            outer = context.deadline_timer
            cancelling = 0
            if timer is not None:
                context.deadline_timer = timer
                cancelling = timer.task.cancelling()
            try:
                # -- retry (layers/retry.py), its first attempt --
                blocked: str | None = None
                if retry is not None:
                    if budget is not None:
                        budget.deposit()
                    if isinstance(request.body, bytes):
                        blocked = retry.blocked(request)
                    else:
                        request, blocked = await retry.replayable(request)
                    context.attempt = 1
                    context.endpoint = None
                response: Response | None = None
                error: ProxyError | None = None
                reason: str | None = None
                offered = False  # (the first attempt's response could go out as it arrived)
                try:
                    # -- the attempt stage (layers/telemetry.py: the attempt span) --
                    forwarded = request
                    token: object = None
                    if stage is not None:
                        forwarded, token = stage.begin(request)
                    try:
                        # -- balance (layers/balance.py) --
                        unit = units.get(context.upstream)
                        if unit is None:
                            raise NoRoute(f"no balancer for upstream {context.upstream!r}")
                        balancer = unit.balancer
                        state = balancer.take(forwarded)
                        start = clock()
                        # (one reading serves both ends the layers read back to back: the
                        # balancer's start is the outlier's unless the breaker queued it, the
                        # outlier's end the balancer's)
                        began = start
                        ended = start
                        timed = False
                        failed = True
                        try:
                            # -- breaker (layers/breaker.py) --
                            breaker = unit.breaker
                            if breaker is not None and not breaker.try_acquire():
                                await breaker.acquire(forwarded)
                                began = clock()
                            try:
                                # -- outlier (layers/outlier.py) --
                                detector = unit.detector
                                endpoint = context.endpoint
                                host = None
                                if detector is not None and endpoint is not None:
                                    host = detector.begin(endpoint)
                                context.final = final
                                offered = final is not None and context.write_final is not None
                                if detector is None or host is None:
                                    response = await terminal(forwarded)
                                else:
                                    try:
                                        response = await terminal(forwarded)
                                    except (ProxyError, asyncio.CancelledError):
                                        detector.record(host, forwarded, None, clock() - began)
                                        raise
                                    ended = clock()
                                    timed = True
                                    detector.record(host, forwarded, response.status, ended - began)
                            finally:
                                context.final = None  # (retries, if any, are layered)
                                if breaker is not None:
                                    breaker.release()
                            status = response.status
                            failed = status >= 500 or status == 429
                        finally:
                            balancer.give_back(state, (ended if timed else clock()) - start, failed)
                    except BaseException as exc:
                        if stage is not None:
                            stage.fail(request, token, exc)
                        raise
                    if stage is not None:
                        response = stage.end(request, token, response)
                    if retry is not None:
                        # (a response written as it arrived was found final: no reason)
                        if not offered or context.write_final is not None:
                            reason = retry.reason(response)
                except ProxyError as exc:
                    if retry is None:
                        raise
                    error = exc
                    reason = retry.error_reason(exc)
                if retry is None:
                    assert response is not None
                    return response
                if reason is not None:  # retry-eligible: the retry loop goes on, layered
                    return await retry.resume(
                        full_attempt, request, response, error, reason, blocked
                    )
                tried = context.endpoint
                if tried is not None:
                    context.previous_endpoints.append(tried)
                if error is not None:
                    raise error
                assert response is not None
                return response
            except asyncio.CancelledError as exc:
                if timer is not None and deadline_fired(context, timer, cancelling):
                    assert budget_s is not None
                    raise UpstreamTimeout(after_s=budget_s) from exc
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                    context.deadline_timer = outer
        except ProxyError as exc:  # (the route's end, after its timer is given back)
            if not map_errors:
                raise
            return map_error(request, exc)

    def handle(request: Request) -> Awaitable[Response]:
        for bypasser in bypassers:
            if bypasser.bypass(request):
                return full(request)
        return run(request)

    return handle
