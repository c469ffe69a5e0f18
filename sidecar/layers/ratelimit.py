"""Local rate limiting: a token bucket per route (Envoy local_ratelimit, Linkerd
HTTPLocalRateLimitPolicy), optionally one bucket per caller identity with a bounded map.
Over the limit it fails fast with RateLimited (429) or, observe-only, records the decision."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sidecar.errors import RateLimited
from sidecar.http import Request, Response
from sidecar.stack import Clock, Handler, Layer, monotonic

__all__ = ["RateLimitConfig", "RateLimiter", "TokenBucket", "ratelimit_layer"]


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """`rps` tokens per second, at most `burst` stored; per-identity buckets when asked."""

    rps: float
    burst: float = 0.0  # 0 means max(1, rps): one second's worth
    per_identity: bool = False
    max_identities: int = 10_000  # bound on per-identity buckets (least recently used evicted)
    enforce: bool = True

    def __post_init__(self) -> None:
        if self.rps <= 0:
            raise ValueError(f"rps must be > 0, got {self.rps}")
        if self.burst < 0:
            raise ValueError(f"burst must be >= 0, got {self.burst}")
        if self.max_identities < 1:
            raise ValueError(f"max_identities must be >= 1, got {self.max_identities}")

    @property
    def capacity(self) -> float:
        return self.burst if self.burst > 0 else max(1.0, self.rps)


class TokenBucket:
    """A lazily refilled token bucket (no timer task)."""

    __slots__ = ("_capacity", "_rate", "_stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self._rate = rate
        self._capacity = capacity
        self.tokens = capacity
        self._stamp = now

    def take(self, now: float) -> bool:
        """Take one token if available."""
        elapsed = now - self._stamp
        if elapsed > 0:
            self.tokens = min(self._capacity, self.tokens + elapsed * self._rate)
            self._stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """The buckets of one limiter plus its counters (for /stats)."""

    def __init__(self, config: RateLimitConfig, clock: Clock = monotonic) -> None:
        self.config = config
        self._clock = clock
        self._shared = TokenBucket(config.rps, config.capacity, clock())
        self._by_identity: OrderedDict[str, TokenBucket] = OrderedDict()
        self.allowed = 0
        self.limited = 0

    def _bucket(self, request: Request, now: float) -> TokenBucket:
        if not self.config.per_identity:
            return self._shared
        context = request.context
        key = context.peer_identity or context.downstream_addr.rpartition(":")[0]
        bucket = self._by_identity.get(key)
        if bucket is None:
            if len(self._by_identity) >= self.config.max_identities:
                self._by_identity.popitem(last=False)
            bucket = TokenBucket(self.config.rps, self.config.capacity, now)
            self._by_identity[key] = bucket
        else:
            self._by_identity.move_to_end(key)
        return bucket

    def admit(self, request: Request) -> bool:
        """True when the request is within the limit (counts the decision)."""
        now = self._clock()
        if self._bucket(request, now).take(now):
            self.allowed += 1
            return True
        self.limited += 1
        return False

    def check(self, request: Request) -> None:
        """The layer's decision: RateLimited over the rate (observe-only: recorded)."""
        if not self.admit(request):
            if self.config.enforce:
                request.context.attributes["meshlens.ratelimit.limited"] = True
                raise RateLimited("local rate limit exceeded")
            request.context.attributes["meshlens.ratelimit.would_limit"] = True

    def stats(self) -> dict[str, Any]:
        return {
            "rps": self.config.rps,
            "burst": self.config.capacity,
            "per_identity": self.config.per_identity,
            "identities": len(self._by_identity),
            "enforce": self.config.enforce,
            "allowed": self.allowed,
            "limited": self.limited,
        }


def ratelimit_layer(
    config: RateLimitConfig, *, clock: Clock = monotonic, limiter: RateLimiter | None = None
) -> Layer:
    """Refuse (429) or, observe-only, mark requests over the rate; pass `limiter` to share state."""
    if limiter is None:
        limiter = RateLimiter(config, clock)
    elif limiter.config != config:
        raise ValueError("limiter was built from a different RateLimitConfig")
    check = limiter.check

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            check(request)
            return await inner(request)

        return handle

    return wrap
