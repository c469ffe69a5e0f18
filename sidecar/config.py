"""The sidecar's policy document: the schema of the config file (and of the identical document
the control plane pushes per service), validated with every problem listed at once, then turned
into the frozen per-layer configs (`<Concern>Config`) that sidecar/build.py composes.

The schema is declared with sidecar/schema.py rather than pydantic: pydantic and its ~40 models
cost the sidecar process 16 MB of its 42 MB at start-up (issue 3: RSS <= 40 MB under load).

Defaults sit next to each field with the anchor they follow (see sidecar/CONFIG.md).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.http import Endpoint, parse_digits
from sidecar.jwks import ALGORITHMS, JwksConfig
from sidecar.layers.authz import AuthzConfig, AuthzRule
from sidecar.layers.balance import BalanceConfig
from sidecar.layers.breaker import BreakerConfig
from sidecar.layers.budget import BudgetConfig
from sidecar.layers.fallback import DEFAULT_ON, TRIGGERS, FallbackConfig, FallbackResponse
from sidecar.layers.fault import FaultConfig
from sidecar.layers.jwt import JwtConfig, JwtProvider, JwtRule, TokenSource
from sidecar.layers.outlier import LatencyConfig, OutlierConfig, SuccessRateConfig
from sidecar.layers.ratelimit import RateLimitConfig
from sidecar.layers.retry import RetryConfig
from sidecar.layers.routing import (
    DEFAULT_ROUTE,
    PASSTHROUGH_ROUTE,
    Destination,
    HeaderMatch,
    MatchConfig,
    RouteRule,
    RoutingConfig,
)
from sidecar.layers.timeout import TimeoutConfig
from sidecar.regex import RegexError, compile_regex
from sidecar.schema import (
    Bool,
    DictOf,
    Field,
    Float,
    Int,
    Invalid,
    ListOf,
    Model,
    Nullable,
    OneOf,
    SchemaError,
    Str,
    validate,
)

__all__ = [
    "DOCUMENT",
    "ConfigError",
    "InboundSpec",
    "RouteSpec",
    "SidecarConfig",
    "UpstreamSpec",
    "config_to_dict",
    "load_config",
    "parse_config",
]

_NAME = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"  # DNS-like: names are hosts and metric labels
_ROUTE_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
_RESERVED_ROUTES = frozenset({DEFAULT_ROUTE, PASSTHROUGH_ROUTE})


class ConfigError(ValueError):
    """The document is invalid; `errors` lists every problem as "path: message"."""

    def __init__(self, errors: list[str] | tuple[str, ...]) -> None:
        self.errors = tuple(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} problem(s) in sidecar config:\n{lines}")


# The document's schema (sidecar/schema.py): every model is a Model of named Fields whose default
# is written as the raw value it stands for. Hooks raise Invalid("message") for their path.

_POSITIVE = Float(gt=0)
_NAME_STR = Str(pattern=_ROUTE_NAME, max_length=64)
_HEADER_NAME = Str(pattern=r"^[A-Za-z0-9-]+$")
_UPSTREAM_PROTOCOLS = OneOf(("http1", "h2", "grpc", "auto"))
_GRPC_CODES = ("cancelled", "unknown", "resource-exhausted", "aborted", "internal", "unavailable")
_REQUIRES = OneOf(("required", "allow_missing", "allow_missing_or_failed", "none"))


def _endpoint_from_string(value: Any) -> Any:
    """Accept the shorthand "host:port"."""
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        number = parse_digits(port, 5) if sep else None
        if number is None:
            raise Invalid(f"endpoint {value!r} is not host:port")
        return {"host": host.strip("[]"), "port": number}
    return value


ENDPOINT = Model(
    "an endpoint",
    {
        "host": Field(Str(min_length=1)),
        "port": Field(Int(ge=1, le=65535)),
        "weight": Field(Int(gt=0), 1),
        "labels": Field(DictOf(Str(), Str()), {}),
        "identity": Field(Str(pattern=r"^$|^spiffe://[^/]+/.+$"), ""),  # set: speak mTLS to it
    },
    before=_endpoint_from_string,
)

LIMITS = Model(
    "upstream limits",
    {
        "max_connections": Field(Int(ge=1), 1024),  # Envoy circuit_breakers default
        "max_pending": Field(Int(ge=0), 1024),
        "max_requests": Field(Int(ge=1), 1024),
        "pending_timeout_s": Field(_POSITIVE, 3.0),  # Linkerd outbound failfast
        "enforce": Field(Bool(), True),
    },
)

SUCCESS_RATE = Model(
    "a success-rate rule",
    {
        "window_s": Field(Float(ge=1, le=3600), 10.0),  # Linkerd unified breaker
        "min_requests": Field(Int(ge=1), 5),
        "threshold": Field(Float(gt=0, le=1), 0.8),
    },
)

LATENCY = Model(
    "a latency rule",
    {
        "factor": Field(Float(gt=1), 3.0),  # eject above factor x peer median latency
        "min_requests": Field(Int(ge=1), 20),
        "min_latency_ms": Field(Float(ge=0), 10.0),
    },
)


def _ejection_order(m: dict[str, Any]) -> None:
    if m["base_ejection_s"] > m["max_ejection_s"]:
        raise Invalid("base_ejection_s must be <= max_ejection_s")


OUTLIER = Model(
    "an outlier policy",
    {
        "consecutive_5xx": Field(Nullable(Int(ge=1)), 5),  # Envoy
        "consecutive_gateway_failures": Field(Nullable(Int(ge=1)), None),  # Envoy: off by default
        "success_rate": Field(Nullable(SUCCESS_RATE), {}),
        "latency": Field(Nullable(LATENCY), None),
        "base_ejection_s": Field(_POSITIVE, 30.0),  # Envoy base_ejection_time
        "max_ejection_s": Field(_POSITIVE, 300.0),  # Envoy max_ejection_time
        "max_ejection_percent": Field(Float(ge=0, le=100), 10.0),  # Envoy
        "interval_s": Field(_POSITIVE, 1.0),
        "enforce": Field(Bool(), True),
    },
    after=(_ejection_order,),
)

UPSTREAM = Model(
    "an upstream",
    {
        "endpoints": Field(ListOf(ENDPOINT), []),
        "lb": Field(OneOf(("round_robin", "least_request", "peak_ewma")), "peak_ewma"),  # Linkerd
        "slow_start_s": Field(Float(ge=0), 0.0),  # Envoy slow_start_window (0: off)
        "connect_timeout_s": Field(_POSITIVE, 1.0),  # Linkerd outbound connect timeout
        "limits": Field(LIMITS, {}),
        "outlier": Field(Nullable(OUTLIER), {}),
        "protocol": Field(_UPSTREAM_PROTOCOLS, "auto"),  # auto: what the caller spoke
    },
)


def _one_kind(m: dict[str, Any]) -> None:
    if (m["exact"] is None) == (m["regex"] is None):
        raise Invalid("set exactly one of exact, regex")
    if m["regex"] is not None:
        try:
            compile_regex(m["regex"])
        except RegexError as exc:
            raise Invalid(f"invalid regex {m['regex']!r}: {exc}") from exc


HEADER_MATCH = Model(
    "a header match",
    {"exact": Field(Nullable(Str()), None), "regex": Field(Nullable(Str()), None)},
    after=(_one_kind,),
)


def _exact_shorthand(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: {"exact": v} if isinstance(v, str) else v for k, v in value.items()}
    return value


def _match_methods(value: list[str]) -> list[str]:
    for method in value:
        if not re.fullmatch(r"[A-Za-z]+", method):
            raise Invalid(f"invalid method {method!r}")
    return [m.upper() for m in value]


MATCH = Model(
    "a match",
    {
        # hosts empty: the names of the route's destination upstreams
        "hosts": Field(ListOf(Str()), [], after=lambda v: [h.lower() for h in v]),
        "path_prefix": Field(Str(pattern=r"^/"), "/"),
        # a plain string is an exact match
        "headers": Field(DictOf(Str(), HEADER_MATCH), {}, before=_exact_shorthand),
        "methods": Field(ListOf(Str()), [], after=_match_methods),  # empty: any method
    },
)

DESTINATION = Model("a destination", {"upstream": Field(Str()), "weight": Field(Int(gt=0), 1)})


def _per_try_within_request(m: dict[str, Any]) -> None:
    per_try, request = m["per_try_s"], m["request_s"]
    if per_try and request and per_try > request:
        raise Invalid(f"per_try_s ({per_try:g}) must be <= request_s ({request:g})")


TIMEOUT = Model(
    "a timeout policy",
    {
        "request_s": Field(Nullable(_POSITIVE), 15.0),  # Envoy route timeout; covers every try
        "per_try_s": Field(Nullable(_POSITIVE), None),  # Istio: defaults to the request timeout
        "idle_s": Field(Nullable(_POSITIVE), 300.0),  # Envoy stream_idle_timeout
        "propagate": Field(Bool(), True),  # honour and forward x-meshlens-timeout-ms
        "enforce": Field(Bool(), True),
    },
    after=(_per_try_within_request,),
)

BUDGET = Model(
    "a retry budget",
    {
        "ratio": Field(Float(ge=0, le=1000), 0.2),  # Tower TpsBudget / Linkerd: 20 %
        "min_per_s": Field(Float(ge=0), 10.0),  # 10 retries per second always allowed
        "window_s": Field(Float(ge=1, le=60), 10.0),  # ttl 10 s
    },
)


def _statuses_in_on(value: Any) -> Any:
    """`on: [5xx, 409]` is shorthand for `on: [5xx], statuses: [409]`."""
    if isinstance(value, Mapping) and True in value and "on" not in value:
        # a YAML 1.1 loader elsewhere turned the key `on` into True
        value = {("on" if k is True else k): v for k, v in value.items()}
    if isinstance(value, Mapping) and isinstance(value.get("on"), list):
        on = value["on"]
        numbers = [c for c in on if isinstance(c, int) and not isinstance(c, bool)]
        if numbers:
            value = dict(value)
            value["on"] = [c for c in on if c not in numbers]
            statuses = value.get("statuses", [])
            value["statuses"] = [*statuses, *numbers] if isinstance(statuses, list) else statuses
    return value


def _status_range(value: list[int]) -> list[int]:
    for status in value:
        if not 100 <= status <= 599:
            raise Invalid(f"retriable status {status} is not in 100..599")
    return value


def _backoff_order(m: dict[str, Any]) -> None:
    if m["backoff_base_ms"] > m["backoff_max_ms"]:
        raise Invalid("backoff_base_ms must be <= backoff_max_ms")


RETRY = Model(
    "a retry policy",
    {
        "attempts": Field(Int(ge=1, le=10), 2),  # total tries (Linkerd: 1 retry)
        "on": Field(  # numbers go to statuses
            ListOf(OneOf(("connect-failure", "reset", "5xx", "gateway-error"))),
            ["connect-failure", "reset", "gateway-error"],
        ),
        "statuses": Field(ListOf(Int()), [], after=_status_range),
        "allow_non_idempotent": Field(Bool(), False),
        "backoff_base_ms": Field(_POSITIVE, 25.0),  # Envoy/Linkerd full-jitter base
        "backoff_max_ms": Field(_POSITIVE, 250.0),  # Envoy 10 x base, Linkerd 250 ms
        "budget": Field(Nullable(BUDGET), {}),
        "retry_after_max_s": Field(Float(ge=0), 10.0),
        "enforce": Field(Bool(), True),
        "grpc_on": Field(ListOf(OneOf(_GRPC_CODES)), ["unavailable"]),  # never deadline-exceeded
    },
    before=_statuses_in_on,
    after=(_backoff_order,),
)

RATELIMIT = Model(
    "a rate limit",
    {
        "rps": Field(_POSITIVE),
        "burst": Field(Float(ge=0), 0.0),  # 0: one second's worth
        "per_identity": Field(Bool(), False),
        "max_identities": Field(Int(ge=1), 10_000),
        "enforce": Field(Bool(), True),
    },
)

DELAY = Model("a delay", {"ms": Field(Float(ge=0)), "percent": Field(Float(ge=0, le=100), 100.0)})
ABORT = Model(
    "an abort",
    {"status": Field(Int(ge=200, le=599), 503), "percent": Field(Float(ge=0, le=100), 100.0)},
)
FAULT = Model(
    "a fault",
    {
        "delay": Field(Nullable(DELAY), None),
        "abort": Field(Nullable(ABORT), None),
        "enforce": Field(Bool(), True),
    },
)

FALLBACK_RESPONSE = Model(
    "a fallback response",
    {
        "status": Field(Int(ge=200, le=599), 200),
        "headers": Field(DictOf(_HEADER_NAME, Str()), {}),
        "body": Field(Str(), ""),
    },
)


def _one_fallback(m: dict[str, Any]) -> None:
    if (m["response"] is None) == (m["upstream"] is None):
        raise Invalid("a fallback needs exactly one of response or upstream")


FALLBACK = Model(
    "a fallback",
    {
        "on": Field(ListOf(OneOf(tuple(sorted(TRIGGERS)))), sorted(DEFAULT_ON)),
        "response": Field(Nullable(FALLBACK_RESPONSE), None),  # answer directly, or
        "upstream": Field(Nullable(Str()), None),  # send the request to this upstream instead
        "enforce": Field(Bool(), True),  # False: observe only (span meshlens.fallback.would_serve)
    },
    after=(_one_fallback,),
)

ROUTE = Model(
    "a route",
    {
        "name": Field(_NAME_STR),
        "match": Field(MATCH, {}),
        "destinations": Field(ListOf(DESTINATION, min_length=1)),
        "timeout": Field(TIMEOUT, {}),
        "retry": Field(Nullable(RETRY), None),
        "ratelimit": Field(Nullable(RATELIMIT), None),
        "fault": Field(Nullable(FAULT), None),
        "fallback": Field(Nullable(FALLBACK), None),  # when the upstream cannot take the request
    },
)

INBOUND = Model(
    "the inbound section",
    {
        "timeout": Field(TIMEOUT, {}),
        "ratelimit": Field(Nullable(RATELIMIT), None),
        "retry": Field(Nullable(RETRY), None),  # towards the local app (e.g. on reset, like Istio)
        # None: the top level's
        "max_request_body_buffer_bytes": Field(Nullable(Int(ge=0)), None),
        "app_protocol": Field(_UPSTREAM_PROTOCOLS, "auto"),  # to the local app
    },
)

MTLS = Model(  # mode None: the --mtls flag's mode
    "the mtls section", {"mode": Field(Nullable(OneOf(("strict", "permissive", "off"))), None)}
)


def _http_methods(value: list[str]) -> list[str]:
    out = [m.upper() for m in value]
    bad = [m for m in out if not m.isalpha()]
    if bad:
        raise Invalid(f"not HTTP methods: {bad}")
    return out


AUTHZ_RULE = Model(
    "an authz rule",
    {
        "name": Field(_NAME_STR),
        "action": Field(OneOf(("allow", "deny", "audit"))),
        "principals": Field(ListOf(Str(min_length=1, pattern=r"^[^*]*\*?$")), []),
        "methods": Field(ListOf(Str()), [], after=_http_methods),
        "paths": Field(ListOf(Str(pattern=r"^/[^*]*\*?$|^\*$")), []),
        # verified JWT claims that must hold, e.g. {role: admin}
        "claims": Field(DictOf(Str(), Str()), {}),
    },
)


def _unique_rules(m: dict[str, Any]) -> None:
    names = [r["name"] for r in m["rules"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise Invalid(f"authz rule names must be unique: {dupes}")


AUTHZ = Model(
    "the authz section",
    {
        "enforce": Field(Bool(), True),  # false: observe only (record would-deny, let it through)
        "rules": Field(ListOf(AUTHZ_RULE), []),
    },
    after=(_unique_rules,),
)


def _http_url(value: str) -> str:
    if value and not re.match(r"^http://[^/?#]+", value):
        raise Invalid(f"must be an http://host[:port]/path URL, got {value!r}")
    return value


def _one_jwks_source(m: dict[str, Any]) -> None:
    if sum(bool(m[k]) for k in ("url", "file", "inline")) != 1:
        raise Invalid("jwks needs exactly one of url, file, inline")


JWKS = Model(
    "a jwks",
    {
        # http://host[:port]/path, fetched through the sidecar's upstream pool
        "url": Field(Str(), "", after=_http_url),
        "file": Field(Str(), ""),  # re-read when it changes
        "inline": Field(Str(), ""),  # the JWKS JSON itself
        "cache_s": Field(_POSITIVE, 600.0),  # Envoy remote_jwks cache_duration
        "timeout_s": Field(_POSITIVE, 2.0),
        "min_refetch_interval_s": Field(Float(ge=0), 10.0),  # unknown kid: refetch at most
    },
    after=(_one_jwks_source,),
)


def _header_or_param(m: dict[str, Any]) -> None:
    if bool(m["header"]) == bool(m["param"]):
        raise Invalid("a token source is either a header or a param")


TOKEN_SOURCE = Model(
    "a token source",
    {
        "header": Field(Str(), ""),  # e.g. authorization (with prefix "Bearer ")
        "prefix": Field(Str(), ""),
        "param": Field(Str(), ""),  # a query parameter, e.g. access_token
    },
    after=(_header_or_param,),
)

CLAIM_HEADER = Model(
    "a claim header", {"claim": Field(Str(min_length=1)), "header": Field(_HEADER_NAME)}
)

JWT_PROVIDER = Model(
    "a JWT provider",
    {
        "name": Field(_NAME_STR),
        "issuer": Field(Str(min_length=1)),
        "audiences": Field(ListOf(Str()), []),  # empty: aud not checked
        "jwks": Field(JWKS),
        "algorithms": Field(ListOf(OneOf(tuple(sorted(ALGORITHMS)))), sorted(ALGORITHMS)),
        "sources": Field(ListOf(TOKEN_SOURCE), [{"header": "authorization", "prefix": "Bearer "}]),
        "forward": Field(Bool(), False),  # Envoy default: strip the token
        "forward_payload_header": Field(Str(pattern=r"^$|^[A-Za-z0-9-]+$"), ""),
        "claim_to_headers": Field(ListOf(CLAIM_HEADER), []),
        "clock_skew_s": Field(Float(ge=0), 60.0),  # Envoy clock_skew_seconds
        "require_expiration": Field(Bool(), False),
    },
)

JWT_RULE = Model(
    "a JWT rule",
    {
        "path_prefix": Field(Str(pattern=r"^/"), "/"),
        "methods": Field(ListOf(Str()), []),
        "requires": Field(_REQUIRES, "required"),
        "providers": Field(ListOf(Str()), []),  # empty: any provider
    },
)


def _provider_names(m: dict[str, Any]) -> None:
    names = [p["name"] for p in m["providers"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    unknown = sorted({n for r in m["rules"] for n in r["providers"]} - set(names))
    if dupes or unknown:
        raise Invalid(f"duplicate providers {dupes}, rules name unknown providers {unknown}")


JWT = Model(
    "the jwt section",
    {
        "enforce": Field(Bool(), True),  # false: observe only (record would-deny, let it through)
        "providers": Field(ListOf(JWT_PROVIDER), []),
        "rules": Field(ListOf(JWT_RULE), []),  # first match wins; none matches: default_requires
        "default_requires": Field(_REQUIRES, "required"),
    },
    after=(_provider_names,),
)

DOCUMENT = Model(
    "the document",
    {
        "version": Field(
            Str(),
            "0",
            before=lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v,
        ),
        "service": Field(Str(pattern=r"^$|" + _NAME), ""),
        # Istio ALLOW_ANY
        "outbound_policy": Field(OneOf(("allow_any", "registry_only")), "allow_any"),
        # Linkerd: > 64 KiB never retried
        "max_request_body_buffer_bytes": Field(Int(ge=0), 65_536),
        "ratelimit": Field(Nullable(RATELIMIT), None),  # all outbound requests, before routing
        "upstreams": Field(DictOf(Str(pattern=_NAME, max_length=253), UPSTREAM), {}),
        "routes": Field(ListOf(ROUTE), []),
        "inbound": Field(INBOUND, {}),
        "mtls": Field(MTLS, {}),
        "authz": Field(AUTHZ, {}),  # inbound authorization; no rules: allow everything
        "jwt": Field(JWT, {}),  # inbound end-user authentication; no providers: off
    },
)


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """One upstream service: its static endpoints and the configs of its per-upstream layers."""

    name: str
    endpoints: tuple[Endpoint, ...]
    balance: BalanceConfig
    limits: BreakerConfig
    outlier: OutlierConfig | None
    protocol: str = "auto"  # http1 | h2 | grpc | auto (sidecar/h2upstream.py)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route: its match rule and the configs of its per-route layers."""

    rule: RouteRule
    timeout: TimeoutConfig
    retry: RetryConfig | None
    ratelimit: RateLimitConfig | None
    fault: FaultConfig | None
    fallback: FallbackConfig | None = None

    @property
    def name(self) -> str:
        return self.rule.name


@dataclass(frozen=True, slots=True)
class InboundSpec:
    timeout: TimeoutConfig
    ratelimit: RateLimitConfig | None
    retry: RetryConfig | None
    app_protocol: str = "auto"  # http1 | h2 | grpc | auto


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """The validated document as frozen per-layer configs; `document` is its normalized dict."""

    version: str
    service: str
    routing: RoutingConfig
    upstreams: Mapping[str, UpstreamSpec]
    routes: tuple[RouteSpec, ...]
    inbound: InboundSpec
    ratelimit: RateLimitConfig | None
    max_request_body_buffer_bytes: int
    document: Mapping[str, Any] = field(compare=False, repr=False)
    authz: AuthzConfig = field(default_factory=AuthzConfig)
    mtls_mode: str | None = None  # None: keep the sidecar's start-up (--mtls) mode
    jwt: JwtConfig = field(default_factory=JwtConfig)

    @property
    def outbound_policy(self) -> str:
        return self.routing.outbound_policy


def _cross_errors(doc: Mapping[str, Any]) -> list[str]:
    """Checks across the document, run on the raw dict so they are reported with the rest."""
    errors: list[str] = []
    raw_upstreams = doc.get("upstreams")
    upstreams = set(raw_upstreams) if isinstance(raw_upstreams, Mapping) else set()
    routes = doc.get("routes")
    seen: dict[str, int] = {}
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(route, Mapping):
            continue
        name = route.get("name")
        if isinstance(name, str):
            if name in _RESERVED_ROUTES:
                errors.append(f"routes[{i}].name: {name!r} is reserved")
            if name in seen:
                errors.append(
                    f"routes[{i}].name: duplicate route name {name!r} (routes[{seen[name]}])"
                )
            seen.setdefault(name, i)
        fallback = route.get("fallback")
        target = fallback.get("upstream") if isinstance(fallback, Mapping) else None
        if isinstance(target, str) and target not in upstreams:
            errors.append(f"routes[{i}].fallback.upstream: unknown upstream {target!r}")
        destinations = route.get("destinations")
        for j, dest in enumerate(destinations if isinstance(destinations, list) else []):
            target = dest.get("upstream") if isinstance(dest, Mapping) else None
            if isinstance(target, str) and target not in upstreams:
                errors.append(
                    f"routes[{i}].destinations[{j}].upstream: unknown upstream {target!r}"
                )
    return errors


def parse_config(doc: Mapping[str, Any]) -> SidecarConfig:
    """Validate a policy document (file or control-plane push); ConfigError lists every problem."""
    if not isinstance(doc, Mapping):
        raise ConfigError([f"(document): expected a mapping, got {type(doc).__name__}"])
    errors: list[str] = []
    document: dict[str, Any] | None = None
    try:
        document = validate(DOCUMENT, doc)
    except SchemaError as exc:
        errors.extend(exc.errors)
    errors.extend(_cross_errors(doc))
    if errors or document is None:
        raise ConfigError(errors)
    try:
        return _to_config(document)
    except ValueError as exc:  # a dataclass invariant the schema did not already cover
        raise ConfigError([f"(document): {exc}"]) from exc


# Below, `m` is a validated section of the document: a dict with every field of its Model.


def _timeout(m: Mapping[str, Any]) -> TimeoutConfig:
    return TimeoutConfig(m["request_s"], m["per_try_s"], m["idle_s"], m["propagate"], m["enforce"])


def _per_try(m: Mapping[str, Any]) -> float | None:
    """The per-try timeout the retry layer enforces (none when timeouts only observe)."""
    return m["per_try_s"] if m["enforce"] else None


def _retry(
    m: Mapping[str, Any] | None, per_try_s: float | None, buffer_bytes: int
) -> RetryConfig | None:
    if m is None:
        # a per-try timeout alone still needs the retry layer to enforce it (one attempt)
        return None if per_try_s is None else RetryConfig(attempts=1, per_try_s=per_try_s)
    budget = m["budget"]
    return RetryConfig(
        attempts=m["attempts"],
        on=frozenset(m["on"]),
        statuses=frozenset(m["statuses"]),
        allow_non_idempotent=m["allow_non_idempotent"],
        backoff_base_ms=m["backoff_base_ms"],
        backoff_max_ms=m["backoff_max_ms"],
        budget=BudgetConfig(budget["ratio"], budget["min_per_s"], budget["window_s"])
        if budget
        else None,
        retry_after_max_s=m["retry_after_max_s"],
        per_try_s=per_try_s,
        max_buffer_bytes=buffer_bytes,
        enforce=m["enforce"],
        grpc_on=frozenset(m["grpc_on"]),
    )


def _ratelimit(m: Mapping[str, Any] | None) -> RateLimitConfig | None:
    if m is None:
        return None
    return RateLimitConfig(
        m["rps"], m["burst"], m["per_identity"], m["max_identities"], m["enforce"]
    )


def _fault(m: Mapping[str, Any] | None) -> FaultConfig | None:
    if m is None or (m["delay"] is None and m["abort"] is None):
        return None
    delay, abort = m["delay"], m["abort"]
    return FaultConfig(
        delay_ms=delay["ms"] if delay else 0.0,
        delay_percent=delay["percent"] if delay else 0.0,
        abort_status=abort["status"] if abort else 503,
        abort_percent=abort["percent"] if abort else 0.0,
        enforce=m["enforce"],
    )


def _outlier(m: Mapping[str, Any] | None) -> OutlierConfig | None:
    if m is None:
        return None
    rate, lat = m["success_rate"], m["latency"]
    return OutlierConfig(
        consecutive_5xx=m["consecutive_5xx"],
        consecutive_gateway_failures=m["consecutive_gateway_failures"],
        success_rate=SuccessRateConfig(rate["window_s"], rate["min_requests"], rate["threshold"])
        if rate
        else None,
        latency=LatencyConfig(lat["factor"], lat["min_requests"], lat["min_latency_ms"])
        if lat
        else None,
        base_ejection_s=m["base_ejection_s"],
        max_ejection_s=m["max_ejection_s"],
        max_ejection_percent=m["max_ejection_percent"],
        interval_s=m["interval_s"],
        enforce=m["enforce"],
    )


def _upstream(name: str, m: Mapping[str, Any]) -> UpstreamSpec:
    endpoints = tuple(
        Endpoint(
            e["host"],
            e["port"],
            service=name,
            instance=e["labels"].get("instance", f"{e['host']}:{e['port']}"),
            weight=e["weight"],
            labels=tuple(sorted(e["labels"].items())),
            identity=e["identity"],
        )
        for e in m["endpoints"]
    )
    limits = m["limits"]
    return UpstreamSpec(
        protocol=m["protocol"],
        name=name,
        endpoints=endpoints,
        balance=BalanceConfig(
            lb=m["lb"], slow_start_s=m["slow_start_s"], connect_timeout_s=m["connect_timeout_s"]
        ),
        limits=BreakerConfig(
            max_connections=limits["max_connections"],
            max_pending=limits["max_pending"],
            max_requests=limits["max_requests"],
            pending_timeout_s=limits["pending_timeout_s"],
            enforce=limits["enforce"],
        ),
        outlier=_outlier(m["outlier"]),
    )


def _route(m: Mapping[str, Any], buffer_bytes: int) -> RouteSpec:
    match = m["match"]
    headers = tuple(
        HeaderMatch(name.lower(), exact=h["exact"], regex=h["regex"])
        for name, h in match["headers"].items()
    )
    rule = RouteRule(
        name=m["name"],
        match=MatchConfig(
            hosts=frozenset(match["hosts"]),
            path_prefix=match["path_prefix"],
            headers=headers,
            methods=frozenset(match["methods"]),
        ),
        destinations=tuple(Destination(d["upstream"], d["weight"]) for d in m["destinations"]),
    )
    return RouteSpec(
        rule=rule,
        timeout=_timeout(m["timeout"]),
        retry=_retry(m["retry"], _per_try(m["timeout"]), buffer_bytes),
        ratelimit=_ratelimit(m["ratelimit"]),
        fault=_fault(m["fault"]),
        fallback=_fallback(m["fallback"]),
    )


def _fallback(m: Mapping[str, Any] | None) -> FallbackConfig | None:
    if m is None:
        return None
    response = None
    if m["response"] is not None:
        r = m["response"]
        headers = tuple((k.lower(), v) for k, v in r["headers"].items())
        response = FallbackResponse(r["status"], headers, r["body"].encode())
    return FallbackConfig(
        on=frozenset(m["on"]),
        response=response,
        upstream=m["upstream"] or "",
        enforce=m["enforce"],
    )


def _to_config(m: dict[str, Any]) -> SidecarConfig:
    buffer_bytes = m["max_request_body_buffer_bytes"]
    routes = tuple(_route(r, buffer_bytes) for r in m["routes"])
    inbound = m["inbound"]
    inbound_buffer = inbound["max_request_body_buffer_bytes"]
    inbound_buffer = buffer_bytes if inbound_buffer is None else inbound_buffer
    return SidecarConfig(
        version=m["version"],
        service=m["service"],
        routing=RoutingConfig(
            routes=tuple(r.rule for r in routes),
            services=frozenset(m["upstreams"]),
            outbound_policy=m["outbound_policy"],
        ),
        upstreams={name: _upstream(name, u) for name, u in m["upstreams"].items()},
        routes=routes,
        inbound=InboundSpec(
            timeout=_timeout(inbound["timeout"]),
            ratelimit=_ratelimit(inbound["ratelimit"]),
            retry=_retry(inbound["retry"], _per_try(inbound["timeout"]), inbound_buffer),
            app_protocol=inbound["app_protocol"],
        ),
        ratelimit=_ratelimit(m["ratelimit"]),
        max_request_body_buffer_bytes=buffer_bytes,
        document=m,
        authz=_authz(m["authz"]),
        mtls_mode=m["mtls"]["mode"],
        jwt=_jwt(m["jwt"]),
    )


def _jwt(m: Mapping[str, Any]) -> JwtConfig:
    providers = tuple(
        JwtProvider(
            name=p["name"],
            issuer=p["issuer"],
            jwks=JwksConfig(
                url=p["jwks"]["url"],
                file=p["jwks"]["file"],
                inline=p["jwks"]["inline"],
                cache_s=p["jwks"]["cache_s"],
                timeout_s=p["jwks"]["timeout_s"],
                min_refetch_interval_s=p["jwks"]["min_refetch_interval_s"],
            ),
            audiences=frozenset(p["audiences"]),
            algorithms=frozenset(p["algorithms"]),
            sources=tuple(
                TokenSource(s["header"].lower(), s["prefix"], s["param"]) for s in p["sources"]
            ),
            forward=p["forward"],
            forward_payload_header=p["forward_payload_header"].lower(),
            claim_to_headers=tuple(
                (c["claim"], c["header"].lower()) for c in p["claim_to_headers"]
            ),
            clock_skew_s=p["clock_skew_s"],
            require_expiration=p["require_expiration"],
        )
        for p in m["providers"]
    )
    rules = tuple(
        JwtRule(
            path_prefix=r["path_prefix"],
            methods=frozenset(x.upper() for x in r["methods"]),
            requires=r["requires"],
            providers=tuple(r["providers"]),
        )
        for r in m["rules"]
    )
    return JwtConfig(providers, rules, default_requires=m["default_requires"], enforce=m["enforce"])


def _authz(m: Mapping[str, Any]) -> AuthzConfig:
    rules = tuple(
        AuthzRule(
            name=r["name"],
            action=r["action"],
            principals=tuple(r["principals"]),
            methods=frozenset(r["methods"]),
            paths=tuple(r["paths"]),
            claims=tuple(sorted(r["claims"].items())),
        )
        for r in m["rules"]
    )
    return AuthzConfig(rules=rules, enforce=m["enforce"])


@functools.cache
def _yaml12_loader() -> Any:
    """SafeLoader with YAML 1.2 booleans: only true/false, so `on:` (retry) stays a string.

    Built on first use: PyYAML is only imported when a YAML file is read (sidecar RSS, issue 3).
    """
    import yaml

    class _Yaml12Loader(yaml.SafeLoader):
        pass

    _Yaml12Loader.yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _Yaml12Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )
    return _Yaml12Loader


def load_config(path: str | Path) -> SidecarConfig:
    """Read and validate a YAML or JSON policy file (".json" is parsed as JSON, else YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from exc
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([f"{path}: not valid json: {exc}"]) from exc
        except RecursionError as exc:  # ([[[[...]]]] past the interpreter's recursion limit)
            raise ConfigError([f"{path}: not valid json: nested too deeply"]) from exc
        return parse_config({} if doc is None else doc)
    import yaml

    try:
        doc = yaml.load(text, Loader=_yaml12_loader())
    except yaml.YAMLError as exc:
        raise ConfigError(
            [f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"]
        ) from exc
    except RecursionError as exc:
        raise ConfigError(
            [f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: nested too deeply"]
        ) from exc
    if doc is None:
        doc = {}
    return parse_config(doc)


def config_to_dict(config: SidecarConfig) -> dict[str, Any]:
    """The effective document (defaults filled in), as plain JSON-able data for /config."""
    return json.loads(json.dumps(config.document))  # type: ignore[no-any-return]
