"""Circuit breaking by static limits per upstream (Envoy circuit_breakers thresholds): at most
`max_connections` exchanges at once (HTTP/1.1: one per connection), up to `max_pending` more waiting
in FIFO order for one to finish, and `max_requests` in total; past that, fail fast with Overflow."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.errors import Overflow
from sidecar.http import Request, Response
from sidecar.stack import Handler, Layer

__all__ = ["Breaker", "BreakerConfig", "breaker_layer"]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Limits of one upstream; Envoy's defaults are 1024 each."""

    max_connections: int = 1024
    max_pending: int = 1024
    max_requests: int = 1024
    pending_timeout_s: float = 3.0  # Linkerd failfast: a queued request gives up after this
    enforce: bool = True  # False: record meshlens.breaker.would_overflow, never wait or refuse

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        if self.max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {self.max_pending}")
        if self.max_requests < 1:
            raise ValueError(f"max_requests must be >= 1, got {self.max_requests}")
        if self.pending_timeout_s <= 0:
            raise ValueError(f"pending_timeout_s must be > 0, got {self.pending_timeout_s}")


class Breaker:
    """Admission state of one upstream: active exchanges and a bounded FIFO of waiters."""

    def __init__(self, service: str, config: BreakerConfig) -> None:
        self.service = service
        self.config = config
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.overflows: dict[str, int] = {}

    @property
    def pending(self) -> int:
        return len(self._waiters)

    def _limit_hit(self) -> str | None:
        """Which limit a new request would overflow, or None if it may proceed or wait."""
        config = self.config
        if self.active + self.pending >= config.max_requests:
            return "max_requests"
        if self.active >= config.max_connections and self.pending >= config.max_pending:
            return "max_pending" if config.max_pending else "max_connections"
        return None

    def try_acquire(self) -> bool:
        """Take a slot at once when no limit is near (the common case); False: use `acquire`."""
        config = self.config
        if (
            self.active < config.max_connections
            and self.active + len(self._waiters) < config.max_requests
        ):
            self.active += 1
            return True
        return False

    async def acquire(self, request: Request) -> None:
        """Take a slot, waiting in line if allowed; Overflow when a limit is hit (enforcing)."""
        limit = self._limit_hit()
        attrs = request.context.attributes
        if limit is not None:
            self.overflows[limit] = self.overflows.get(limit, 0) + 1
            if self.config.enforce:
                attrs["meshlens.breaker.state"] = "open"
                attrs["meshlens.breaker.limit"] = limit
                raise Overflow(f"upstream {self.service!r} over {limit}")
            attrs["meshlens.breaker.would_overflow"] = limit
        if not self.config.enforce or self.active < self.config.max_connections:
            self.active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        attrs["meshlens.breaker.queued"] = True
        try:
            async with asyncio.timeout(self.config.pending_timeout_s):
                await waiter
        except (asyncio.CancelledError, TimeoutError) as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we gave up
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it already
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                self.overflows["pending_timeout"] = self.overflows.get("pending_timeout", 0) + 1
                attrs["meshlens.breaker.state"] = "open"
                attrs["meshlens.breaker.limit"] = "pending_timeout"
                raise Overflow(f"upstream {self.service!r}: no connection free in time") from exc
            raise

    def release(self) -> None:
        """Give the slot back, handing it straight to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # `active` is unchanged: the slot changes hands
                return
        self.active -= 1

    def stats(self) -> dict[str, Any]:
        return {
            "state": "open" if self._limit_hit() else "closed",
            "active": self.active,
            "pending": self.pending,
            "max_connections": self.config.max_connections,
            "max_pending": self.config.max_pending,
            "max_requests": self.config.max_requests,
            "enforce": self.config.enforce,
            "overflows": dict(self.overflows),
        }


def breaker_layer(breakers: Mapping[str, Breaker]) -> Layer:
    """Admit each attempt through the breaker of context.upstream (if it has one)."""

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            breaker = breakers.get(request.context.upstream)
            if breaker is None:
                return await inner(request)
            if not breaker.try_acquire():
                await breaker.acquire(request)
            try:
                return await inner(request)
            finally:
                breaker.release()

        return handle

    return wrap
