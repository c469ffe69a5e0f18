"""Request timeout: one deadline covering every attempt of a request (Envoy route timeout).

Sets `context.deadline` (read by retry so it never backs off past it) and `context.idle_timeout_s`
(enforced by the upstream handler between body chunks). The per-try timeout is enforced by the
retry layer, because an expired try is retried."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from sidecar.errors import UpstreamTimeout
from sidecar.http import (
    DeadlineQueue,
    DeadlineTimer,
    Headers,
    Request,
    RequestContext,
    Response,
    header_value,
    parse_digits,
    with_header,
)
from sidecar.stack import Clock, Handler, Layer, monotonic

__all__ = [
    "DEADLINE_HEADER",
    "TimeoutConfig",
    "arm_deadline",
    "deadline_budget",
    "deadline_fired",
    "deadline_tail",
    "timeout_layer",
]

DEADLINE_HEADER: Final = "x-meshlens-timeout-ms"


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Timeouts of a route; None disables one."""

    request_s: float | None = 15.0  # Envoy route timeout default, covers all tries
    per_try_s: float | None = None  # Istio: default = the request timeout
    idle_s: float | None = 300.0  # Envoy stream_idle_timeout default (5 min)
    propagate: bool = True  # honour and forward x-meshlens-timeout-ms (the caller's budget)
    enforce: bool = True  # False: record meshlens.timeout.would_timeout, cut nothing

    def __post_init__(self) -> None:
        for name in ("request_s", "per_try_s", "idle_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if (
            self.per_try_s is not None
            and self.request_s is not None
            and self.per_try_s > self.request_s
        ):
            raise ValueError(
                f"per_try_s ({self.per_try_s:g}) must be <= request_s ({self.request_s:g})"
            )


def _budget(theirs: str | None, request_s: float | None) -> float | None:
    """Our budget, shortened by the caller's x-meshlens-timeout-ms (`theirs`) when smaller."""
    ms = parse_digits(theirs) if theirs is not None else None
    if ms is None:
        return request_s
    budget_s = ms / 1000.0
    return budget_s if request_s is None or budget_s < request_s else request_s


def deadline_tail(request_s: float | None) -> Headers:
    """The x-meshlens-timeout-ms header forwarding a whole `request_s` budget, as a tuple to
    append (built once per route; () without a budget)."""
    if request_s is None:
        return ()
    return ((DEADLINE_HEADER, str(max(0, int(request_s * 1000.0)))),)


def deadline_budget(
    request: Request,
    request_s: float | None,
    idle_s: float | None,
    propagate: bool,
    tail: Headers | None = None,
) -> tuple[Request, float | None]:
    """The timeout layer before its wait: the idle timeout, the budget (None: no deadline),
    shortened by the caller's and forwarded in x-meshlens-timeout-ms with `propagate`;
    UpstreamTimeout when the caller's deadline has already passed. `tail`: deadline_tail of
    `request_s` (else built here)."""
    context = request.context
    if idle_s is not None:
        context.idle_timeout_s = idle_s
    budget_s = request_s
    if propagate:
        theirs = header_value(request.headers, DEADLINE_HEADER)
        budget_s = _budget(theirs, request_s)
        if budget_s is not None:
            if theirs is None:  # our whole budget; nothing to replace: append
                if tail is None:
                    tail = deadline_tail(request_s)
                request = request.with_headers(request.headers + tail)
            else:
                if budget_s != request_s:
                    context.attributes["meshlens.timeout.caller_budget_ms"] = budget_s * 1e3
                ms = str(max(0, int(budget_s * 1000.0)))
                headers = with_header(request.headers, DEADLINE_HEADER, ms)
                request = request.with_headers(headers)
    if budget_s is not None and budget_s <= 0:
        context.attributes["meshlens.timeout.fired"] = "caller_deadline"
        raise UpstreamTimeout("the caller's deadline has already passed")
    return request, budget_s


_current_task: Final = asyncio.current_task  # (no module attribute lookup per request)


def arm_deadline(
    context: RequestContext, budget_s: float, clock: Clock, queue: DeadlineQueue | None = None
) -> DeadlineTimer | None:
    """Set context.deadline and arm the request's one timer (None: not in a task), in `queue`
    (the caller's: its requests' timers share one loop timer) when given.

    What asyncio.timeout does, without its Timeout object and two coroutines; the HTTP/1.1
    upstream's wait for response headers shares the timer (DeadlineTimer). The caller puts it
    on context.deadline_timer, and cancels it and restores the previous one when done."""
    deadline = clock() + budget_s
    if context.deadline is None or deadline < context.deadline:
        context.deadline = deadline
    task = _current_task() if queue is None else queue.current_task()
    if task is None:
        return None
    timer = DeadlineTimer(task, deadline, queue)
    timer.arm(budget_s)
    return timer


def deadline_fired(context: RequestContext, timer: DeadlineTimer, cancelling: int) -> bool:
    """For a cancel during the wait: True (recorded; raise UpstreamTimeout) when it is ours, i.e.
    our timer fired and no one else cancelled the task meanwhile (`cancelling`: the task's
    count before we armed); False: re-raise the cancel."""
    if timer.fired and timer.task.uncancel() <= cancelling:
        context.attributes["meshlens.timeout.fired"] = "request"
        return True
    return False


def timeout_layer(config: TimeoutConfig, *, clock: Clock = monotonic) -> Layer:
    """Bound the whole exchange (up to response headers) by `config.request_s`.

    With `propagate`, an incoming x-meshlens-timeout-ms shortens the budget (the caller gives up
    then anyway) and the budget is forwarded in that header, so deadlines chain across hops
    (like gRPC's grpc-timeout; Envoy only sends x-envoy-expected-rq-timeout-ms as a hint).
    """
    request_s = config.request_s
    idle_s = config.idle_s
    propagate = config.propagate
    tail = deadline_tail(request_s)

    def wrap(inner: Handler) -> Handler:
        if not config.enforce:
            return _observe(inner, request_s, clock)
        queue = DeadlineQueue()  # the deadline timers of this handler's requests

        async def handle(request: Request) -> Response:
            request, budget_s = deadline_budget(request, request_s, idle_s, propagate, tail)
            if budget_s is None:
                return await inner(request)
            context = request.context
            timer = arm_deadline(context, budget_s, clock, queue)
            if timer is None:  # not in a task (no loop to cancel us): nothing bounds the wait
                return await inner(request)
            outer, context.deadline_timer = context.deadline_timer, timer
            cancelling = timer.task.cancelling()
            try:
                return await inner(request)
            except asyncio.CancelledError as exc:
                if deadline_fired(context, timer, cancelling):
                    raise UpstreamTimeout(after_s=budget_s) from exc
                raise
            finally:
                timer.cancel()
                context.deadline_timer = outer

        return handle

    return wrap


def _observe(inner: Handler, request_s: float | None, clock: Clock) -> Handler:
    async def handle(request: Request) -> Response:
        start = clock()
        try:
            return await inner(request)
        finally:
            if request_s is not None and clock() - start > request_s:
                request.context.attributes["meshlens.timeout.would_timeout"] = True

    return handle
