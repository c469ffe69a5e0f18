"""Request timeout: one deadline covering every attempt of a request (Envoy route timeout).

Sets `context.deadline` (read by retry so it never backs off past it) and `context.idle_timeout_s`
(enforced by the upstream handler between body chunks). The per-try timeout is enforced by the
retry layer, because an expired try is retried."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from sidecar.errors import UpstreamTimeout
from sidecar.http import DeadlineTimer, Request, Response, header_value, with_header
from sidecar.stack import Clock, Handler, Layer, monotonic

__all__ = ["DEADLINE_HEADER", "TimeoutConfig", "timeout_layer"]

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
    if theirs is None or not theirs.isdigit():
        return request_s
    budget_s = int(theirs) / 1000.0
    return budget_s if request_s is None or budget_s < request_s else request_s


def timeout_layer(config: TimeoutConfig, *, clock: Clock = monotonic) -> Layer:
    """Bound the whole exchange (up to response headers) by `config.request_s`.

    With `propagate`, an incoming x-meshlens-timeout-ms shortens the budget (the caller gives up
    then anyway) and the budget is forwarded in that header, so deadlines chain across hops
    (like gRPC's grpc-timeout; Envoy only sends x-envoy-expected-rq-timeout-ms as a hint).
    """
    request_s = config.request_s
    idle_s = config.idle_s
    propagate = config.propagate

    def wrap(inner: Handler) -> Handler:
        if not config.enforce:
            return _observe(inner, request_s, clock)

        async def handle(request: Request) -> Response:
            context = request.context
            if idle_s is not None:
                context.idle_timeout_s = idle_s
            budget_s = request_s
            if propagate:
                theirs = header_value(request.headers, DEADLINE_HEADER)
                budget_s = _budget(theirs, request_s)
                if budget_s is not None:
                    if budget_s != request_s:
                        context.attributes["meshlens.timeout.caller_budget_ms"] = budget_s * 1e3
                    ms = str(max(0, int(budget_s * 1000.0)))
                    if theirs is None:  # nothing to replace: append (no rebuild of the tuple)
                        headers = (*request.headers, (DEADLINE_HEADER, ms))
                    else:
                        headers = with_header(request.headers, DEADLINE_HEADER, ms)
                    request = request.with_headers(headers)
            if budget_s is None:
                return await inner(request)
            if budget_s <= 0:
                context.attributes["meshlens.timeout.fired"] = "caller_deadline"
                raise UpstreamTimeout("the caller's deadline has already passed")
            deadline = clock() + budget_s
            if context.deadline is None or deadline < context.deadline:
                context.deadline = deadline
            # What asyncio.timeout does, without its Timeout object and two coroutines; the
            # HTTP/1.1 upstream's wait for response headers shares the timer (DeadlineTimer).
            task = asyncio.current_task()
            if task is None:  # not in a task (no loop to cancel us): nothing can bound the wait
                return await inner(request)
            cancelling = task.cancelling()
            timer = DeadlineTimer(task, deadline)
            timer.arm(budget_s)
            outer, context.deadline_timer = context.deadline_timer, timer
            try:
                return await inner(request)
            except asyncio.CancelledError as exc:
                # Ours only if we fired and no one else cancelled the task meanwhile.
                if timer.fired and task.uncancel() <= cancelling:
                    context.attributes["meshlens.timeout.fired"] = "request"
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
