"""Retries: re-send a failed attempt through balancing (so it may land elsewhere), bounded by
a per-try timeout, full-jitter backoff, Retry-After, a TPS budget and the request deadline.

Only replayable requests are retried: idempotent methods (others only when the route opts in), and
bodies that are buffered; a streamed body with a declared length up to `max_buffer_bytes` is read
into memory before the first attempt, any other streamed body is never retried (Linkerd: >64 KiB
never retried). A connect failure is retried for every method: the request never left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

from sidecar.errors import (
    BadRequest,
    PerTryTimeout,
    ProxyError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReset,
)
from sidecar.http import Endpoint, Request, RequestContext, Response, header_value, parse_digits
from sidecar.layers.budget import BudgetConfig, RetryBudget
from sidecar.stack import Clock, Handler, Layer, Sleep, monotonic

__all__ = [
    "CONDITIONS",
    "GRPC_RETRY_CODES",
    "IDEMPOTENT_METHODS",
    "Retry",
    "RetryConfig",
    "parse_retry_after",
    "retry_layer",
    "retry_layer_of",
]

CONDITIONS = frozenset({"connect-failure", "reset", "5xx", "gateway-error"})
# gRPC statuses a route may retry on (never deadline-exceeded: the caller's time is up)
GRPC_RETRY_CODES = {
    "cancelled": 1,
    "unknown": 2,
    "resource-exhausted": 8,
    "aborted": 10,
    "internal": 13,
    "unavailable": 14,
}
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_GATEWAY: Final = frozenset({502, 503, 504})
DEFAULT_BUDGET = BudgetConfig()


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """When and how often a route retries."""

    attempts: int = 2  # total tries including the first (Linkerd limit 1 retry)
    on: frozenset[str] = frozenset({"connect-failure", "reset", "gateway-error"})
    statuses: frozenset[int] = frozenset()  # extra retriable statuses, e.g. {409, 429}
    allow_non_idempotent: bool = False  # istio/istio#13851: never retry POST by default
    backoff_base_ms: float = 25.0  # Envoy/Linkerd base
    backoff_max_ms: float = 250.0  # Envoy 10 x base, Linkerd 250 ms
    budget: BudgetConfig | None = DEFAULT_BUDGET
    retry_after_max_s: float = 10.0  # longer Retry-After: return the response, don't wait
    per_try_s: float | None = None  # from the route's timeout section
    max_buffer_bytes: int = 65_536  # Linkerd: bodies > 64 KiB are never retried
    enforce: bool = True  # False: record meshlens.retry.would_retry, never retry
    grpc_on: frozenset[str] = frozenset({"unavailable"})  # grpc-status names (GRPC_RETRY_CODES)

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 10:
            raise ValueError(f"attempts must be in 1..10, got {self.attempts}")
        unknown = self.on - CONDITIONS
        if unknown:
            raise ValueError(f"unknown retry conditions {sorted(unknown)}")
        if any(not 100 <= s <= 599 for s in self.statuses):
            raise ValueError(f"statuses must be in 100..599, got {sorted(self.statuses)}")
        if not 0 < self.backoff_base_ms <= self.backoff_max_ms:
            raise ValueError("backoff_base_ms must be > 0 and <= backoff_max_ms")
        if self.retry_after_max_s < 0:
            raise ValueError(f"retry_after_max_s must be >= 0, got {self.retry_after_max_s}")
        if self.per_try_s is not None and self.per_try_s <= 0:
            raise ValueError(f"per_try_s must be > 0, got {self.per_try_s}")
        if self.max_buffer_bytes < 0:
            raise ValueError(f"max_buffer_bytes must be >= 0, got {self.max_buffer_bytes}")
        not_retriable = [code for code in self.grpc_on if code not in GRPC_RETRY_CODES]
        if not_retriable:
            bad = sorted(not_retriable)
            raise ValueError(f"grpc_on: {bad} not retriable (allowed {sorted(GRPC_RETRY_CODES)})")


def parse_retry_after(value: str, now_wall: float) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), None if invalid."""
    value = value.strip()
    seconds = parse_digits(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_wall)


def _status_reason(config: RetryConfig, status: int) -> str | None:
    if status in config.statuses:
        return "retriable-status"
    if status in _GATEWAY and "gateway-error" in config.on:
        return "gateway-error"
    if status >= 500 and "5xx" in config.on:
        return "5xx"
    return None


def _grpc_reason(config: RetryConfig, response: Response) -> str | None:
    """`grpc-<name>` for a retriable grpc-status in a Trailers-Only head or received trailers."""
    if not config.grpc_on:
        return None
    code = header_value(response.headers, "grpc-status")
    trailers = response.trailers
    if code is None and trailers is not None and trailers.received:
        code = header_value(trailers.fields, "grpc-status")
    for name in config.grpc_on:
        if code is not None and code.strip() == str(GRPC_RETRY_CODES[name]):
            return f"grpc-{name}"
    return None


def _error_reason(config: RetryConfig, exc: ProxyError) -> str | None:
    if isinstance(exc, UpstreamConnectError):
        return "connect-failure" if "connect-failure" in config.on else None
    if isinstance(exc, UpstreamReset | UpstreamProtocolError):
        return "reset" if "reset" in config.on else None
    if isinstance(exc, PerTryTimeout):
        return "per-try-timeout"
    return None


async def _buffer(request: Request, limit: int) -> Request | None:
    """`request` with its body in memory, or None when it cannot be replayed."""
    body = request.body
    if isinstance(body, bytes):
        return request
    length = body.length
    if length is None or length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await body.read():
        size += len(chunk)
        if size > length:
            raise BadRequest("request body longer than its content-length")
        chunks.append(chunk)
    if size != length:
        raise BadRequest("request body shorter than its content-length")
    return dataclasses.replace(request, body=b"".join(chunks))


async def _discard(response: Response) -> None:
    """Release a response we will not forward (its connection goes back or gets closed)."""
    body = response.body
    if isinstance(body, bytes):
        return
    close = getattr(body, "aclose", None)
    if close is not None:
        await close()
        return
    remaining = 65_536  # drain a small error body; a larger one is left to the upstream pool
    while remaining > 0 and (chunk := await body.read()):
        remaining -= len(chunk)


def retry_layer(
    config: RetryConfig,
    *,
    clock: Clock = monotonic,
    sleep: Sleep = asyncio.sleep,
    random: Callable[[], float] = _random.random,
    wall_clock: Clock = time.time,
    budget: RetryBudget | None = None,
) -> Layer:
    """Retry per `config`; pass `budget` to share it (and read its stats)."""
    if budget is None and config.budget is not None:
        budget = RetryBudget(config.budget, clock)
    return retry_layer_of(Retry(config, clock, sleep, random, wall_clock, budget))


def retry_layer_of(retry: Retry) -> Layer:
    """The layer running `retry` (a fused route runs the same Retry's first attempt itself)."""

    def wrap(inner: Handler) -> Handler:
        def handle(request: Request) -> Awaitable[Response]:
            return retry.run(inner, request)  # no coroutine of our own: one await level less

        return handle

    return wrap


class Retry:
    """The retry loop of one route (state: the budget)."""

    def __init__(
        self,
        config: RetryConfig,
        clock: Clock,
        sleep: Sleep,
        random: Callable[[], float],
        wall_clock: Clock,
        budget: RetryBudget | None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.random = random
        self.wall_clock = wall_clock
        self.budget = budget

    async def _try(self, inner: Handler, request: Request) -> Response:
        per_try_s = self.config.per_try_s
        if per_try_s is None:
            return await inner(request)
        try:
            async with asyncio.timeout(per_try_s):
                return await inner(request)
        except TimeoutError as exc:
            raise PerTryTimeout(after_s=per_try_s) from exc

    def blocked(self, request: Request) -> str | None:
        """What limits the retries of a request with a buffered body (None: nothing does)."""
        config = self.config
        if config.attempts == 1:
            return "single_attempt"
        if request.method not in IDEMPOTENT_METHODS and not config.allow_non_idempotent:
            return "non_idempotent"
        return None

    async def replayable(self, request: Request) -> tuple[Request, str | None]:
        """The request to send and what limits its retries (None: nothing does)."""
        config = self.config
        body = request.body
        if not isinstance(body, bytes) and config.attempts > 1:
            if body.length is None or body.length > config.max_buffer_bytes:
                return request, "body_not_buffered"
            if config.enforce:  # observe-only never changes how the body flows
                buffered = await _buffer(request, config.max_buffer_bytes)
                assert buffered is not None
                request = buffered
        return request, self.blocked(request)

    def reason(self, response: Response) -> str | None:
        """Why this response is worth another attempt (None: it is not)."""
        return _status_reason(self.config, response.status) or _grpc_reason(self.config, response)

    def final(self, response: Response) -> bool:
        """True when this response is not worth another attempt (`reason` is None): a fused
        route's first attempt may then send it downstream as it arrives."""
        return self.reason(response) is None

    def error_reason(self, exc: ProxyError) -> str | None:
        """Why this failure is worth another attempt (None: it is not)."""
        return _error_reason(self.config, exc)

    async def resume(
        self,
        inner: Handler,
        request: Request,
        response: Response | None,
        error: ProxyError | None,
        reason: str,
        blocked: str | None,
    ) -> Response:
        """After a first attempt run elsewhere (a fused route) whose outcome has a retry
        `reason`: what the loop of `run` does next, then its later attempts through `inner`."""
        context = request.context
        tried = _endpoint(context)
        if tried is not None:
            context.previous_endpoints.append(tried)
        delay = self._delay(request, response, reason, blocked)
        if delay is None:
            if error is not None:
                raise error
            assert response is not None
            return response
        context.attributes["meshlens.retry.reason"] = reason
        if response is not None:
            await _discard(response)
        if delay > 0:
            await self.sleep(delay)
        return await self.run(inner, request, 2, blocked)

    async def run(
        self, inner: Handler, request: Request, first: int = 1, blocked: str | None = None
    ) -> Response:
        """Attempts through `inner` until one is final. `first` > 1 continues a request whose
        earlier attempts ran already (`resume`); `blocked` is then what limits its retries."""
        if first == 1:
            if self.budget is not None:
                self.budget.deposit()
            request, blocked = await self.replayable(request)
        context = request.context
        attempt = first
        while True:
            context.attempt = attempt
            context.endpoint = None
            response: Response | None = None
            error: ProxyError | None = None
            try:
                if self.config.per_try_s is None:
                    response = await inner(request)
                else:
                    response = await self._try(inner, request)
                reason = self.reason(response)
            except ProxyError as exc:
                error = exc
                reason = self.error_reason(exc)
            tried = _endpoint(context)  # set by the balancer during the attempt
            if tried is not None:
                context.previous_endpoints.append(tried)
            delay = None if reason is None else self._delay(request, response, reason, blocked)
            if delay is None:
                if attempt > 1:
                    context.attributes["meshlens.retry.attempts"] = attempt
                if error is not None:
                    raise error
                assert response is not None
                return response
            context.attributes["meshlens.retry.reason"] = reason or ""
            if response is not None:
                await _discard(response)
            if delay > 0:
                await self.sleep(delay)
            attempt += 1

    def _delay(
        self, request: Request, response: Response | None, reason: str, blocked: str | None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when this outcome is final."""
        config = self.config
        attrs = request.context.attributes
        attempt = request.context.attempt
        if blocked is not None:
            if blocked == "single_attempt":
                return None
            # a connect failure never sent the request, so any method may go again; gRPC (all
            # POST) names its retriable statuses per route, like gRPC's own retry policy
            if blocked != "non_idempotent" or not (
                reason == "connect-failure" or reason.startswith("grpc-")
            ):
                attrs["meshlens.retry.skipped"] = blocked
                return None
        if attempt >= config.attempts:
            attrs["meshlens.retry.skipped"] = "max_attempts"
            return None
        # Envoy full jitter: retry N waits U[0, (2^N - 1) * base), capped at max
        upper_ms = min(config.backoff_max_ms, ((1 << attempt) - 1) * config.backoff_base_ms)
        delay = self.random() * upper_ms / 1000.0
        if response is not None:
            value = header_value(response.headers, "retry-after")
            wait = None if value is None else parse_retry_after(value, self.wall_clock())
            if wait is not None:
                if wait > config.retry_after_max_s:
                    attrs["meshlens.retry.skipped"] = "retry_after_too_long"
                    return None
                delay = max(delay, wait)
        deadline = request.context.deadline
        if deadline is not None and self.clock() + delay >= deadline:
            attrs["meshlens.retry.skipped"] = "deadline"
            return None
        if self.budget is not None and not self.budget.withdraw():
            attrs["meshlens.retry.budget_exhausted"] = True
            return None
        if not config.enforce:
            attrs["meshlens.retry.would_retry"] = reason
            return None
        return delay


def _endpoint(context: RequestContext) -> Endpoint | None:
    """context.endpoint, read in a function: right after `context.endpoint = None`, mypy (and
    mypyc, which compiles on its types) would take the field for still None after the await."""
    return context.endpoint
