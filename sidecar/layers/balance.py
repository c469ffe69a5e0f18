"""Load balancing: choose the endpoint of each attempt among an upstream's endpoints.

Round robin (smooth weighted), P2C least-request, or P2C over Peak-EWMA cost (the default, as in
Linkerd/Tower: cost = rtt_estimate x (pending + 1), rtt 30 ms seed, 10 s decay). Weights and the
Envoy slow-start ramp scale the cost. Ejected endpoints (outlier detection) are skipped unless all
are ejected (panic), and endpoints of earlier attempts are avoided when another one is available.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.discovery import EndpointSource
from sidecar.errors import NoHealthyUpstream, NoRoute
from sidecar.http import Endpoint, Request, Response
from sidecar.stack import Clock, Handler, Layer, monotonic

__all__ = [
    "LB_KINDS",
    "BalanceConfig",
    "Balancer",
    "EndpointHealth",
    "EndpointState",
    "balance_layer",
]

LB_KINDS = ("round_robin", "least_request", "peak_ewma")


@dataclass(frozen=True, slots=True)
class BalanceConfig:
    """How one upstream's endpoints are chosen."""

    lb: str = "peak_ewma"  # Linkerd's only algorithm; Istio defaults to least_request
    slow_start_s: float = 0.0  # Envoy slow_start_window; 0 disables
    slow_start_min_weight_percent: float = 10.0  # Envoy min_weight_percent
    connect_timeout_s: float = 1.0  # Linkerd outbound connect timeout (Envoy: 5 s)
    default_rtt_s: float = 0.030  # Linkerd controller default_rtt
    decay_s: float = 10.0  # Linkerd controller decay
    failure_penalty_s: float = 1.0  # rtt sample charged for errors, 5xx and 429 (fast failures)

    def __post_init__(self) -> None:
        if self.lb not in LB_KINDS:
            raise ValueError(f"lb must be one of {', '.join(LB_KINDS)}, got {self.lb!r}")
        if self.slow_start_s < 0:
            raise ValueError(f"slow_start_s must be >= 0, got {self.slow_start_s}")
        if not 0 < self.slow_start_min_weight_percent <= 100:
            raise ValueError("slow_start_min_weight_percent must be in (0, 100]")
        for name in ("connect_timeout_s", "default_rtt_s", "decay_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.failure_penalty_s < 0:
            raise ValueError(f"failure_penalty_s must be >= 0, got {self.failure_penalty_s}")


class EndpointState:
    """Per-endpoint balancer state (kept across endpoint-set versions by address)."""

    __slots__ = ("added_at", "current", "endpoint", "in_flight", "requests", "rtt_s", "stamp")

    def __init__(self, endpoint: Endpoint, rtt_s: float, now: float, added_at: float) -> None:
        self.endpoint = endpoint
        self.in_flight = 0
        self.requests = 0
        self.rtt_s = rtt_s
        self.stamp = now
        self.added_at = added_at
        self.current = 0.0  # smooth weighted round robin accumulator

    def sample(self, rtt_s: float, now: float, decay_s: float) -> None:
        """Tower PeakEwma::update: a peak replaces the estimate, else decay toward the sample."""
        if rtt_s > self.rtt_s:
            self.rtt_s = rtt_s
        else:
            decay = math.exp(-max(0.0, now - self.stamp) / decay_s)
            self.rtt_s = self.rtt_s * decay + rtt_s * (1.0 - decay)
        self.stamp = now


class EndpointHealth(Protocol):
    """What the balancer needs from outlier detection (satisfied by OutlierDetector)."""

    @property
    def ejected(self) -> int:
        """How many endpoints are not fully in service; 0 lets the balancer skip filtering."""
        ...

    def available(self, endpoint: Endpoint) -> bool: ...


class _AllHealthy:
    ejected = 0

    def available(self, endpoint: Endpoint) -> bool:
        return True


class Balancer:
    """Picks endpoints of one upstream service; reads the source each pick, cached per version."""

    def __init__(
        self,
        service: str,
        config: BalanceConfig,
        source: EndpointSource,
        *,
        health: EndpointHealth | None = None,
        clock: Clock = monotonic,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.service = service
        self.config = config
        self._source = source
        self._health: EndpointHealth = health if health is not None else _AllHealthy()
        self._available = self._health.available
        self._all_weighted = True
        self._clock = clock
        self._random = random
        self._version: int | None = None
        self._states: list[EndpointState] = []
        self.panics = 0
        self._refresh(initial=True)

    def _refresh(self, initial: bool = False) -> None:
        version = self._source.version
        if version == self._version:
            return
        now = self._clock()
        old = {state.endpoint.address: state for state in self._states}
        states = []
        for endpoint in self._source.endpoints(self.service):
            state = old.get(endpoint.address)
            if state is None:
                joined = -math.inf if initial else now  # slow start only for endpoints that join
                state = EndpointState(endpoint, self.config.default_rtt_s, now, joined)
            state.endpoint = endpoint
            states.append(state)
        self._states = states
        self._all_weighted = all(s.endpoint.weight > 0 for s in states)
        self._version = version

    def rebind(self, source: EndpointSource) -> Balancer:
        """Read endpoints from `source` from now on, keeping per-endpoint state by address."""
        self._source = source
        self._version = None
        self._refresh()
        return self

    def _weight(self, state: EndpointState, now: float) -> float:
        weight = float(state.endpoint.weight) or 1.0  # zero weights are only used when all are
        window = self.config.slow_start_s
        if window > 0 and now - state.added_at < window:
            floor = self.config.slow_start_min_weight_percent / 100.0
            weight *= max(floor, (now - state.added_at) / window)  # Envoy, aggression 1.0
        return weight

    def _candidates(self, request: Request) -> list[EndpointState]:
        states = [s for s in self._states if s.endpoint.weight > 0] or self._states
        if not states:
            raise NoHealthyUpstream(f"no endpoints for upstream {self.service!r}")
        healthy = [s for s in states if self._available(s.endpoint)]
        if not healthy:  # every endpoint ejected: use them all rather than fail (panic)
            self.panics += 1
            request.context.attributes["meshlens.balance.panic"] = True
            return states
        previous = request.context.previous_endpoints
        if previous:
            avoid = {endpoint.address for endpoint in previous}
            fresh = [s for s in healthy if s.endpoint.address not in avoid]
            if fresh:
                return fresh
        return healthy

    def pick(self, request: Request) -> EndpointState:
        """The endpoint state for this attempt."""
        self._refresh()
        candidates = self._states
        # fast path (no allocation): nothing ejected, drained or to avoid
        if self._health.ejected or request.context.previous_endpoints or not self._all_weighted:
            candidates = self._candidates(request)
        elif not candidates:
            raise NoHealthyUpstream(f"no endpoints for upstream {self.service!r}")
        if len(candidates) == 1:
            return candidates[0]
        now = self._clock()  # (not read for one candidate)
        if self.config.lb == "round_robin":
            return self._round_robin(candidates, now)
        n = len(candidates)
        i = int(self._random() * n) % n
        j = int(self._random() * (n - 1)) % (n - 1)
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        return a if self._cost(a, now) <= self._cost(b, now) else b

    def _round_robin(self, candidates: list[EndpointState], now: float) -> EndpointState:
        total = 0.0
        best = candidates[0]
        for state in candidates:
            weight = self._weight(state, now)
            state.current += weight
            total += weight
            if state.current > best.current:
                best = state
        best.current -= total
        return best

    def _cost(self, state: EndpointState, now: float) -> float:
        load = (state.in_flight + 1) / self._weight(state, now)
        if self.config.lb == "least_request":
            return load
        state.sample(0.0, now, self.config.decay_s)  # Tower decays the estimate toward 0 on read
        return state.rtt_s * load

    def take(self, request: Request) -> EndpointState:
        """Pick this attempt's endpoint, point the request's context at it, count it in flight."""
        state = self.pick(request)
        context = request.context
        context.endpoint = state.endpoint
        context.connect_timeout_s = self.config.connect_timeout_s
        state.in_flight += 1
        state.requests += 1
        return state

    def give_back(self, state: EndpointState, elapsed_s: float, failed: bool) -> None:
        """The attempt `take` counted is over: out of flight, outcome into the estimate."""
        state.in_flight -= 1
        self.finish(state, elapsed_s, failed)

    def finish(self, state: EndpointState, elapsed_s: float, failed: bool) -> None:
        """Feed one attempt's outcome into the endpoint's RTT estimate."""
        if failed:
            elapsed_s = max(elapsed_s, self.config.failure_penalty_s)
        state.sample(elapsed_s, self._clock(), self.config.decay_s)

    def stats(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "lb": self.config.lb,
            "panics": self.panics,
            "endpoints": [
                {
                    "address": s.endpoint.address,
                    "weight": s.endpoint.weight,
                    "effective_weight": round(self._weight(s, now), 3),
                    "in_flight": s.in_flight,
                    "requests": s.requests,
                    "rtt_ms": round(s.rtt_s * 1000.0, 3),
                    "available": self._available(s.endpoint),
                }
                for s in self._states
            ],
        }


def balance_layer(balancers: Mapping[str, Balancer], *, clock: Clock = monotonic) -> Layer:
    """Set context.endpoint (and connect timeout) from the balancer of context.upstream."""

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            context = request.context
            balancer = balancers.get(context.upstream)
            if balancer is None:
                raise NoRoute(f"no balancer for upstream {context.upstream!r}")
            state = balancer.take(request)
            start = clock()
            failed = True
            try:
                response = await inner(request)
                failed = response.status >= 500 or response.status == 429
                return response
            finally:
                balancer.give_back(state, clock() - start, failed)

        return handle

    return wrap
