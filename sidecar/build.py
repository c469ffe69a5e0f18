"""Composition: turn one config version into the sidecar's outbound and inbound handler stacks.

Everything is built up front, once per version (per-route stacks, per-upstream balancers, breakers
and outlier detectors); the per-request path only runs handlers. Order (sidecar/stack.py):
outer (telemetry) -> proxy_errors -> ratelimit -> routing -> per route: fallback, ratelimit,
fault, timeout, retry -> per_attempt (attempt span) -> balance -> breaker -> outlier -> terminal
(upstream). An outbound route without a fallback runs that per-route part as one fused coroutine
(sidecar/layers/fused.py) when it can; `fuse=False` keeps every route layered.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.config import RouteSpec, SidecarConfig, UpstreamSpec, config_to_dict, parse_config
from sidecar.discovery import EndpointSource, StaticEndpoints
from sidecar.http import Endpoint, Request, Response
from sidecar.layers.authz import Authorizer, authz_layer
from sidecar.layers.balance import Balancer, balance_layer
from sidecar.layers.breaker import Breaker, breaker_layer
from sidecar.layers.budget import BudgetConfig, RetryBudget
from sidecar.layers.fallback import FallbackConfig, FallbackStats, fallback_layer
from sidecar.layers.fault import Fault, fault_layer
from sidecar.layers.fused import UpstreamUnit, fused_route, fusible_stages
from sidecar.layers.outlier import OutlierDetector, outlier_layer
from sidecar.layers.proxy_errors import proxy_errors_layer, routed_errors_layer
from sidecar.layers.ratelimit import RateLimitConfig, RateLimiter, ratelimit_layer
from sidecar.layers.retry import Retry, RetryConfig, retry_layer_of
from sidecar.layers.routing import passthrough_layer, routing_layer
from sidecar.layers.timeout import TimeoutConfig, timeout_layer
from sidecar.stack import AttemptStage, Clock, Handler, Layer, Sleep, compose, monotonic

__all__ = ["BuiltStack", "build_inbound", "build_outbound", "static_endpoints"]

Random = Callable[[], float]
_GLOBAL = "(all)"  # the limiter before routing; not a valid route name


@dataclass(slots=True)
class _State:
    """The stateful parts of a built stack, offered to the next version's build."""

    policies: _Policies
    upstreams: _Upstreams | None = None


class BuiltStack:
    """One direction's handler for one config version, with its state for /config and /stats."""

    def __init__(
        self,
        handler: Handler,
        version: str,
        description: dict[str, Any],
        stats: Callable[[], dict[str, Any]],
        state: _State | None = None,
    ) -> None:
        self.handler = handler
        self.version = version
        self._description = description
        self._stats = stats
        self._state = state  # handed to the next version's build to keep unchanged state
        self.closed = False

    def describe(self) -> dict[str, Any]:
        """The effective config and the layer order of this stack."""
        return dict(self._description)

    def stats(self) -> dict[str, Any]:
        """Live state: endpoints, breakers, outlier detection, retry budgets, rate limiters."""
        return {"version": self.version, **self._stats()}

    async def close(self) -> None:
        """Retire the stack; our layers own no tasks or sockets, so this only marks it closed."""
        self.closed = True


def static_endpoints(config: SidecarConfig) -> StaticEndpoints:
    """The endpoints listed in the config file, as an EndpointSource."""
    return StaticEndpoints({name: spec.endpoints for name, spec in config.upstreams.items()})


def _chain(layers: Sequence[Layer]) -> Layer:
    def wrap(inner: Handler) -> Handler:
        return compose(layers, inner)

    return wrap


class _Upstreams:
    """Per-upstream state shared by every route of one version.

    With `previous`, an upstream whose balance/limits/outlier config did not change keeps its
    balancer (RTT estimates, in-flight counts), breaker and outlier state across the reload.
    """

    def __init__(
        self,
        config: SidecarConfig,
        source: EndpointSource,
        clock: Clock,
        random: Random,
        previous: _Upstreams | None,
    ) -> None:
        self.specs = dict(config.upstreams)
        self.balancers: dict[str, Balancer] = {}
        self.breakers: dict[str, Breaker] = {}
        self.detectors: dict[str, OutlierDetector] = {}
        for name, spec in config.upstreams.items():
            old = previous.specs.get(name) if previous is not None else None
            if previous is not None and old is not None and _same_policy(old, spec):
                self._reuse(name, previous, source)
                continue
            detector = None
            if spec.outlier is not None:
                detector = OutlierDetector(name, spec.outlier, source, clock=clock)
                self.detectors[name] = detector
            self.balancers[name] = Balancer(
                name, spec.balance, source, health=detector, clock=clock, random=random
            )
            self.breakers[name] = Breaker(name, spec.limits)
        # the same objects, one lookup per attempt for a fused route (sidecar/layers/fused.py)
        self.units = {
            name: UpstreamUnit(balancer, self.breakers.get(name), self.detectors.get(name))
            for name, balancer in self.balancers.items()
        }

    def _reuse(self, name: str, previous: _Upstreams, source: EndpointSource) -> None:
        self.balancers[name] = previous.balancers[name].rebind(source)
        self.breakers[name] = previous.breakers[name]
        detector = previous.detectors.get(name)
        if detector is not None:
            self.detectors[name] = detector.rebind(source)

    def layers(self, clock: Clock) -> list[Layer]:
        return [
            balance_layer(self.balancers, clock=clock),
            breaker_layer(self.breakers),
            outlier_layer(self.detectors, clock=clock),
        ]

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, balancer in self.balancers.items():
            detector = self.detectors.get(name)
            out[name] = {
                "balancer": balancer.stats(),
                "breaker": self.breakers[name].stats(),
                "outlier": detector.stats() if detector is not None else None,
            }
        return out


def _same_policy(old: UpstreamSpec, new: UpstreamSpec) -> bool:
    return (old.balance, old.limits, old.outlier) == (new.balance, new.limits, new.outlier)


@dataclass(slots=True)
class _RoutePlan:
    """A route's policy layers in order, and the objects behind them (shared with a fused
    form of the route)."""

    name: str
    layers: list[Layer]
    timeout: TimeoutConfig
    retry: Retry | None = None
    limiter: RateLimiter | None = None
    fault: Fault | None = None


class _Policies:
    """Per-route policy layers and the state behind them (budgets, limiters) for /stats.

    Budgets and limiters of a route whose config did not change carry over from `previous`.
    """

    def __init__(
        self, clock: Clock, sleep: Sleep, random: Random, previous: _Policies | None = None
    ) -> None:
        self.clock, self.sleep, self.random = clock, sleep, random
        self.stats: dict[str, dict[str, Any]] = {}
        self.budgets: dict[str, RetryBudget] = {}
        self.limiters: dict[str, RateLimiter] = {}
        self.fallbacks: dict[str, tuple[FallbackConfig, FallbackStats]] = {}
        self.fused_routes: list[str] = []  # routes running as one fused coroutine
        self._previous = previous

    def limiter(self, name: str, config: RateLimitConfig) -> RateLimiter:
        old = self._previous.limiters.get(name) if self._previous else None
        limiter = old if old is not None and old.config == config else None
        self.limiters[name] = limiter or RateLimiter(config, self.clock)
        return self.limiters[name]

    def _budget(self, name: str, config: BudgetConfig) -> RetryBudget:
        old = self._previous.budgets.get(name) if self._previous else None
        budget = old if old is not None and old.config == config else None
        self.budgets[name] = budget or RetryBudget(config, self.clock)
        return self.budgets[name]

    def route(
        self, name: str, spec: RouteSpec | None, timeout: TimeoutConfig, retry: RetryConfig | None
    ) -> list[Layer]:
        return self.plan(name, spec, timeout, retry).layers

    def plan(
        self, name: str, spec: RouteSpec | None, timeout: TimeoutConfig, retry: RetryConfig | None
    ) -> _RoutePlan:
        """The route's policy layers, and the objects behind them for a fused route."""
        plan = _RoutePlan(name, [], timeout)
        entry: dict[str, Any] = {}
        if spec is not None and spec.ratelimit is not None:
            limiter = self.limiter(name, spec.ratelimit)
            plan.layers.append(ratelimit_layer(spec.ratelimit, limiter=limiter))
            plan.limiter = limiter
            entry["ratelimit"] = limiter.stats
        if spec is not None and spec.fault is not None:
            plan.layers.append(fault_layer(spec.fault, sleep=self.sleep, random=self.random))
            plan.fault = Fault(spec.fault, self.random)
        plan.layers.append(timeout_layer(timeout, clock=self.clock))
        if retry is not None:
            budget = self._budget(name, retry.budget) if retry.budget else None
            plan.retry = Retry(retry, self.clock, self.sleep, self.random, time.time, budget)
            plan.layers.append(retry_layer_of(plan.retry))
            if budget is not None:
                entry["retry_budget"] = budget.stats
        self.stats[name] = entry
        return plan

    def fused(
        self,
        plan: _RoutePlan,
        per_attempt: Sequence[Layer],
        tail: Sequence[Layer],
        upstreams: _Upstreams,
        fuse: bool,
        errors: bool = False,
    ) -> Layer:
        """The route's layers then the per-attempt `tail` (`per_attempt`, balance, breaker,
        outlier), as one fused coroutine per request (sidecar/layers/fused.py) when it covers
        them, else the layered chain. `errors`: the route maps its own ProxyErrors (in the
        fused frame, else a proxy_errors layer first)."""
        layers = [proxy_errors_layer(), *plan.layers, *tail] if errors else [*plan.layers, *tail]
        retry = plan.retry
        if not (
            fuse
            and plan.timeout.enforce
            and (retry is None or retry.config.per_try_s is None)
            and fusible_stages(per_attempt)
        ):
            return _chain(layers)
        stages = [stage for stage in per_attempt if isinstance(stage, AttemptStage)]
        self.fused_routes.append(plan.name)

        def wrap(terminal: Handler) -> Handler:
            return fused_route(
                full=compose(layers, terminal),
                full_attempt=compose(tail, terminal),
                terminal=terminal,
                units=upstreams.units,
                stages=stages,
                timeout=plan.timeout,
                retry=retry,
                limiter=plan.limiter,
                fault=plan.fault,
                clock=self.clock,
                sleep=self.sleep,
                map_errors=errors,
            )

        return wrap

    def fallback(
        self, spec: RouteSpec, route: Sequence[Layer], tail: Sequence[Layer], errors: bool = False
    ) -> Layer:
        """The route's layers, wrapped in its fallback (if any); a fallback upstream gets the
        route's timeout and the per-attempt tail (balance, breaker, outlier) of its own.
        `errors`: a proxy_errors layer first (the route maps its own ProxyErrors)."""
        first = [proxy_errors_layer()] if errors else []
        if spec.fallback is None:
            return _chain([*first, *route])
        config = spec.fallback
        old = self._previous.fallbacks.get(spec.name) if self._previous else None
        stats = old[1] if old is not None and old[0] == config else FallbackStats()
        self.fallbacks[spec.name] = (config, stats)
        self.stats[spec.name]["fallback"] = stats.snapshot
        service_layers = [timeout_layer(spec.timeout, clock=self.clock), *tail]

        def wrap(terminal: Handler) -> Handler:
            service = compose(service_layers, terminal) if config.upstream else None
            layer = fallback_layer(config, service=service, stats=stats)
            return compose([*first, layer, *route], terminal)

        return wrap

    def snapshot(self) -> dict[str, Any]:
        return {name: {k: f() for k, f in entry.items()} for name, entry in self.stats.items()}


def build_outbound(
    config: SidecarConfig | None,
    *,
    terminal: Handler,
    endpoints: EndpointSource | None = None,
    outer: Sequence[Layer] = (),
    per_attempt: Sequence[Layer] = (),
    clock: Clock = monotonic,
    sleep: Sleep = asyncio.sleep,
    random: Random = _random.random,
    previous: BuiltStack | None = None,
    own_addresses: Collection[tuple[str, int]] = (),
    fuse: bool = True,
) -> BuiltStack:
    """The outbound stack (app -> upstream services) for `config` (None: all defaults).

    `own_addresses` are the sidecar's listeners ((host, port)); passthrough refuses them (no loop).
    `fuse`: a route without a fallback runs as one fused coroutine (sidecar/layers/fused.py,
    same decisions and telemetry); False keeps every route's layered chain.

    Pass the active stack as `previous` to keep the state (RTT estimates, ejections, breaker
    counts, retry budgets, rate-limit buckets) of upstreams and routes whose policy is unchanged.
    """
    config = config if config is not None else parse_config({})
    source = endpoints if endpoints is not None else static_endpoints(config)
    old = previous._state if previous is not None else None
    upstreams = _Upstreams(config, source, clock, random, old.upstreams if old else None)
    policies = _Policies(clock, sleep, random, old.policies if old else None)
    tail = [*per_attempt, *upstreams.layers(clock)]
    # fused (and no global rate limit between the proxy_errors layer and the routing): every
    # route maps its own ProxyErrors, a fused route in its own frame, and the proxy_errors
    # layer only what the routing raises itself (no coroutine of its own per routed request)
    inside = fuse and config.ratelimit is None
    routes: dict[str, Layer] = {}
    for spec in config.routes:
        plan = policies.plan(spec.name, spec, spec.timeout, spec.retry)
        if spec.fallback is None:
            routes[spec.name] = policies.fused(plan, per_attempt, tail, upstreams, fuse, inside)
        else:
            routes[spec.name] = policies.fallback(spec, [*plan.layers, *tail], tail, inside)
    default_retry = RetryConfig(max_buffer_bytes=config.max_request_body_buffer_bytes)
    default_plan = policies.plan("default", None, TimeoutConfig(), default_retry)
    default = policies.fused(default_plan, per_attempt, tail, upstreams, fuse, inside)
    passthrough = _chain(
        [
            *([proxy_errors_layer()] if inside else []),
            # outside the mesh: do not leak our deadline header
            *policies.route("passthrough", None, TimeoutConfig(propagate=False), None),
            *per_attempt,
            passthrough_layer(refuse=own_addresses),
        ]
    )
    front: list[Layer] = [*outer, routed_errors_layer() if inside else proxy_errors_layer()]
    limiter = None
    if config.ratelimit is not None:
        limiter = policies.limiter(_GLOBAL, config.ratelimit)
        front.append(ratelimit_layer(config.ratelimit, limiter=limiter))
    routing = routing_layer(
        config.routing, routes, default_route=default, passthrough=passthrough, random=random
    )
    handler = compose([*front, routing], terminal)

    def stats() -> dict[str, Any]:
        return {
            "direction": "outbound",
            "ratelimit": limiter.stats() if limiter is not None else None,
            "upstreams": upstreams.stats(),
            "routes": policies.snapshot(),
        }

    description = {
        "direction": "outbound",
        "version": config.version,
        "service": config.service,
        "order": [
            "outer",
            "proxy_errors",
            "ratelimit",
            "routing",
            "route: fallback, ratelimit, fault, timeout, retry",
            "per_attempt",
            "balance",
            "breaker",
            "outlier",
            "terminal",
        ],
        "fused_routes": list(policies.fused_routes),
        "config": config_to_dict(config),
    }
    return BuiltStack(handler, config.version, description, stats, _State(policies, upstreams))


def _app_layer(app: Endpoint, service: str) -> Layer:
    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            context = request.context
            context.endpoint = app
            context.upstream = service
            return await inner(request)

        return handle

    return wrap


def build_inbound(
    config: SidecarConfig | None,
    *,
    terminal: Handler,
    outer: Sequence[Layer] = (),
    app: Endpoint | None = None,
    clock: Clock = monotonic,
    sleep: Sleep = asyncio.sleep,
    random: Random = _random.random,
    previous: BuiltStack | None = None,
    authorizer: Authorizer | None = None,
) -> BuiltStack:
    """The inbound stack (caller -> local app); `app`, if given, becomes context.endpoint.

    Authorization follows the rate limit (sidecar/stack.py); `authorizer`, if given, is the one
    evaluating config.authz (its decision counts are the caller's to report).
    """
    config = config if config is not None else parse_config({})
    inbound = config.inbound
    old = previous._state if previous is not None else None
    policies = _Policies(clock, sleep, random, old.policies if old else None)
    layers: list[Layer] = [*outer, proxy_errors_layer()]
    limiter: RateLimiter | None = None
    if inbound.ratelimit is not None:
        limiter = policies.limiter(_GLOBAL, inbound.ratelimit)
        layers.append(ratelimit_layer(inbound.ratelimit, limiter=limiter))
    layers.append(authz_layer(config.authz, authorizer=authorizer))
    layers.extend(policies.route("inbound", None, inbound.timeout, inbound.retry))
    if app is not None:
        layers.append(_app_layer(app, config.service))
    handler = compose(layers, terminal)

    def stats() -> dict[str, Any]:
        return {
            "direction": "inbound",
            "ratelimit": limiter.stats() if limiter is not None else None,
            "routes": policies.snapshot(),
        }

    description = {
        "direction": "inbound",
        "version": config.version,
        "service": config.service,
        "order": ["outer", "proxy_errors", "ratelimit", "authz", "timeout", "retry", "terminal"],
        "config": config_to_dict(config),
    }
    return BuiltStack(handler, config.version, description, stats, _State(policies))
