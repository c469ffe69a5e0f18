"""Routing: pick the route of a request (first match wins, on host, path prefix, headers and
method) and its upstream (weighted split); set context.route / context.upstream and hand the
request to that route's own stack. Outbound, a request for a configured service with no matching
route takes an implicit default route; an unknown host:port is passed through (Istio ALLOW_ANY)
unless the policy is registry_only."""

from __future__ import annotations

import bisect
import random as _random
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Final

from sidecar.errors import NoRoute
from sidecar.http import Endpoint, Request, Response, header_value, parse_digits
from sidecar.regex import compile_regex
from sidecar.stack import Handler, Layer

__all__ = [
    "OUTBOUND_POLICIES",
    "Destination",
    "HeaderMatch",
    "MatchConfig",
    "RouteRule",
    "RoutingConfig",
    "passthrough_layer",
    "routing_layer",
    "split_authority",
]

OUTBOUND_POLICIES = ("allow_any", "registry_only")
DEFAULT_ROUTE: Final = "default"
PASSTHROUGH_ROUTE: Final = "passthrough"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """A header that must equal `exact` or fully match `regex` (compiled once, here)."""

    name: str
    exact: str | None = None
    regex: str | None = None
    pattern: Any = field(default=None, compare=False, repr=False)  # RE2 (sidecar/regex.py)

    def __post_init__(self) -> None:
        if self.name != self.name.lower() or not self.name:
            raise ValueError(f"header name must be non-empty lower-case, got {self.name!r}")
        if (self.exact is None) == (self.regex is None):
            raise ValueError(f"header {self.name!r}: set exactly one of exact, regex")
        if self.regex is not None:
            object.__setattr__(self, "pattern", compile_regex(self.regex))

    def matches(self, request: Request) -> bool:
        value = header_value(request.headers, self.name)
        if value is None:
            return False
        if self.pattern is not None:
            return self.pattern.fullmatch(value) is not None
        return value == self.exact


@dataclass(frozen=True, slots=True)
class MatchConfig:
    """Conditions of a route; empty `hosts` means the names of its destination upstreams."""

    hosts: frozenset[str] = frozenset()  # "*" matches any host
    path_prefix: str = "/"
    headers: tuple[HeaderMatch, ...] = ()
    methods: frozenset[str] = frozenset()  # empty: any method

    def __post_init__(self) -> None:
        if not self.path_prefix.startswith("/"):
            raise ValueError(f"path_prefix must start with '/', got {self.path_prefix!r}")


@dataclass(frozen=True, slots=True)
class Destination:
    upstream: str
    weight: int = 1

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"weight must be > 0, got {self.weight}")


@dataclass(frozen=True, slots=True)
class RouteRule:
    name: str
    match: MatchConfig
    destinations: tuple[Destination, ...]

    def __post_init__(self) -> None:
        if not self.destinations:
            raise ValueError(f"route {self.name!r} needs at least one destination")

    @property
    def hosts(self) -> frozenset[str]:
        return self.match.hosts or frozenset(d.upstream for d in self.destinations)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Routes in match order, the configured services, and what to do with unknown hosts."""

    routes: tuple[RouteRule, ...] = ()
    services: frozenset[str] = frozenset()
    outbound_policy: str = "allow_any"

    def __post_init__(self) -> None:
        if self.outbound_policy not in OUTBOUND_POLICIES:
            raise ValueError(f"outbound_policy must be one of {OUTBOUND_POLICIES}")
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique")


def split_authority(authority: str, scheme: str = "http") -> tuple[str, int | None]:
    """(lower-case host, port or the scheme's default port; None if there is none)."""
    host, port = authority, ""
    if authority.startswith("["):
        end = authority.find("]")
        host, port = authority[1:end], authority[end + 2 :]
    elif authority.count(":") == 1:
        host, _, port = authority.partition(":")
    number = parse_digits(port, 5)
    if number is not None:
        return host.lower(), number
    return host.lower(), None if port else _DEFAULT_PORTS.get(scheme)


class _Compiled:
    """One route ready to match: conditions, cumulative weights and its handler."""

    __slots__ = ("any_host", "cumulative", "handler", "hosts", "rule", "upstreams")

    def __init__(self, rule: RouteRule, handler: Handler) -> None:
        self.rule = rule
        self.hosts = rule.hosts
        self.any_host = "*" in self.hosts
        self.upstreams = tuple(d.upstream for d in rule.destinations)
        self.cumulative = tuple(accumulate(d.weight for d in rule.destinations))
        self.handler = handler

    def matches(self, request: Request, host: str) -> bool:
        match = self.rule.match
        if not self.any_host and host not in self.hosts:
            return False
        if match.methods and request.method not in match.methods:
            return False
        if not request.target.startswith(match.path_prefix):
            return False
        return all(h.matches(request) for h in match.headers)


def routing_layer(
    config: RoutingConfig,
    routes: Mapping[str, Layer],
    *,
    default_route: Layer | None = None,
    passthrough: Layer | None = None,
    random: Callable[[], float] = _random.random,
) -> Layer:
    """Dispatch to the stack of the first matching route (`routes` by route name)."""
    registry_only = config.outbound_policy == "registry_only"

    def wrap(inner: Handler) -> Handler:
        compiled = [_Compiled(rule, routes[rule.name](inner)) for rule in config.routes]
        default = default_route(inner) if default_route is not None else None
        # a host some route claims is a mesh host: no matching route is a 404, not passthrough
        claimed = frozenset().union(*(r.hosts for r in config.routes)) - {"*"}
        through = passthrough(inner) if passthrough is not None and not registry_only else None

        def handle(request: Request) -> Awaitable[Response]:
            context = request.context
            host = split_authority(request.authority, request.scheme)[0]
            for route in compiled:
                if route.matches(request, host):
                    upstreams = route.upstreams
                    if len(upstreams) == 1:
                        upstream = upstreams[0]
                    else:
                        point = random() * route.cumulative[-1]
                        upstream = upstreams[bisect.bisect_right(route.cumulative, point)]
                    return _dispatch(request, route.rule.name, upstream, route.handler)
            if default is not None and host in config.services:
                return _dispatch(request, DEFAULT_ROUTE, host, default)
            if through is not None and host and host not in claimed:
                return _dispatch(request, PASSTHROUGH_ROUTE, host, through)
            context.attributes["meshlens.route"] = ""
            raise NoRoute(f"no route for {request.authority or '(no host)'}{request.path}")

        return handle

    return wrap


def _dispatch(request: Request, route: str, upstream: str, handler: Handler) -> Awaitable[Response]:
    context = request.context
    context.route = route
    context.upstream = upstream
    attributes = context.attributes
    attributes["meshlens.route"] = route
    attributes["meshlens.upstream"] = upstream
    return handler(request)  # no coroutine of our own: one await level less per request


def passthrough_layer(
    *, connect_timeout_s: float = 1.0, refuse: Collection[tuple[str, int]] = ()
) -> Layer:
    """Stand-in for the balancer on the passthrough route: the endpoint is the authority itself.

    `refuse` lists (host, port) pairs never to pass through to, e.g. the sidecar's own listeners,
    so a request addressed to the proxy itself cannot loop through it forever.
    """
    refused = frozenset((host.lower(), port) for host, port in refuse)

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            host, port = split_authority(request.authority, request.scheme)
            if not host or port is None or not 0 < port < 65536:
                raise NoRoute(f"cannot pass through to {request.authority!r}")
            if (host, port) in refused:
                raise NoRoute(f"{request.authority} is this proxy; name a service or host:port")
            context = request.context
            context.endpoint = Endpoint(host, port, service=host)
            context.connect_timeout_s = connect_timeout_s
            return await inner(request)

        return handle

    return wrap
