"""The sidecar's policy document: pydantic models for the config file (and the identical document
the control plane pushes per service), validated with every problem listed at once, then turned
into the frozen per-layer configs (`<Concern>Config`) that sidecar/build.py composes.

Defaults sit next to each field with the anchor they follow (see sidecar/CONFIG.md).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sidecar.http import Endpoint
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

__all__ = [
    "ConfigError",
    "DocumentModel",
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
PositiveS = Annotated[float, Field(gt=0)]


class ConfigError(ValueError):
    """The document is invalid; `errors` lists every problem as "path: message"."""

    def __init__(self, errors: list[str] | tuple[str, ...]) -> None:
        self.errors = tuple(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} problem(s) in sidecar config:\n{lines}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointModel(_Model):
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    weight: int = Field(default=1, gt=0)
    labels: dict[str, str] = {}
    identity: str = Field(default="", pattern=r"^$|^spiffe://[^/]+/.+$")  # set: speak mTLS to it

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        """Accept the shorthand "host:port"."""
        if isinstance(value, str):
            host, sep, port = value.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"endpoint {value!r} is not host:port")
            return {"host": host.strip("[]"), "port": int(port)}
        return value


class LimitsModel(_Model):
    max_connections: int = Field(default=1024, ge=1)  # Envoy circuit_breakers default
    max_pending: int = Field(default=1024, ge=0)
    max_requests: int = Field(default=1024, ge=1)
    pending_timeout_s: PositiveS = 3.0  # Linkerd outbound failfast
    enforce: bool = True


class SuccessRateModel(_Model):
    window_s: float = Field(default=10.0, ge=1, le=3600)  # Linkerd unified breaker
    min_requests: int = Field(default=5, ge=1)
    threshold: float = Field(default=0.8, gt=0, le=1)


class LatencyModel(_Model):
    factor: float = Field(default=3.0, gt=1)  # eject above factor x peer median latency
    min_requests: int = Field(default=20, ge=1)
    min_latency_ms: float = Field(default=10.0, ge=0)


class OutlierModel(_Model):
    consecutive_5xx: int | None = Field(default=5, ge=1)  # Envoy
    consecutive_gateway_failures: int | None = Field(default=None, ge=1)  # Envoy: off by default
    success_rate: SuccessRateModel | None = SuccessRateModel()
    latency: LatencyModel | None = None
    base_ejection_s: PositiveS = 30.0  # Envoy base_ejection_time
    max_ejection_s: PositiveS = 300.0  # Envoy max_ejection_time
    max_ejection_percent: float = Field(default=10.0, ge=0, le=100)  # Envoy
    interval_s: PositiveS = 1.0
    enforce: bool = True

    @model_validator(mode="after")
    def _ejection_order(self) -> OutlierModel:
        if self.base_ejection_s > self.max_ejection_s:
            raise ValueError("base_ejection_s must be <= max_ejection_s")
        return self


class UpstreamModel(_Model):
    endpoints: list[EndpointModel] = []
    lb: Literal["round_robin", "least_request", "peak_ewma"] = "peak_ewma"  # Linkerd
    slow_start_s: float = Field(default=0.0, ge=0)  # Envoy slow_start_window (0: off)
    connect_timeout_s: PositiveS = 1.0  # Linkerd outbound connect timeout
    limits: LimitsModel = LimitsModel()
    outlier: OutlierModel | None = OutlierModel()
    protocol: Literal["http1", "h2", "grpc", "auto"] = "auto"  # auto: what the caller spoke


class HeaderMatchModel(_Model):
    exact: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> HeaderMatchModel:
        if (self.exact is None) == (self.regex is None):
            raise ValueError("set exactly one of exact, regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from exc
        return self


class MatchModel(_Model):
    hosts: list[str] = []  # empty: the names of the route's destination upstreams
    path_prefix: str = Field(default="/", pattern=r"^/")
    headers: dict[str, HeaderMatchModel] = {}  # a plain string is an exact match
    methods: list[str] = []  # empty: any method

    @field_validator("headers", mode="before")
    @classmethod
    def _exact_shorthand(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: {"exact": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        for method in value:
            if not re.fullmatch(r"[A-Za-z]+", method):
                raise ValueError(f"invalid method {method!r}")
        return [m.upper() for m in value]

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return [h.lower() for h in value]


class DestinationModel(_Model):
    upstream: str
    weight: int = Field(default=1, gt=0)


class TimeoutModel(_Model):
    request_s: PositiveS | None = 15.0  # Envoy route timeout; covers every try
    per_try_s: PositiveS | None = None  # Istio: defaults to the request timeout
    idle_s: PositiveS | None = 300.0  # Envoy stream_idle_timeout
    propagate: bool = True  # honour and forward x-meshlens-timeout-ms
    enforce: bool = True

    @model_validator(mode="after")
    def _per_try_within_request(self) -> TimeoutModel:
        if self.per_try_s and self.request_s and self.per_try_s > self.request_s:
            raise ValueError(
                f"per_try_s ({self.per_try_s:g}) must be <= request_s ({self.request_s:g})"
            )
        return self


class BudgetModel(_Model):
    ratio: float = Field(default=0.2, ge=0, le=1000)  # Tower TpsBudget / Linkerd: 20 %
    min_per_s: float = Field(default=10.0, ge=0)  # 10 retries per second always allowed
    window_s: float = Field(default=10.0, ge=1, le=60)  # ttl 10 s


RetryOn = Literal["connect-failure", "reset", "5xx", "gateway-error"]
GrpcRetryOn = Literal[
    "cancelled", "unknown", "resource-exhausted", "aborted", "internal", "unavailable"
]


class RetryModel(_Model):
    attempts: int = Field(default=2, ge=1, le=10)  # total tries (Linkerd: 1 retry)
    on: list[RetryOn] = ["connect-failure", "reset", "gateway-error"]  # numbers go to statuses
    statuses: list[int] = []
    allow_non_idempotent: bool = False
    backoff_base_ms: PositiveS = 25.0  # Envoy/Linkerd full-jitter base
    backoff_max_ms: PositiveS = 250.0  # Envoy 10 x base, Linkerd 250 ms
    budget: BudgetModel | None = BudgetModel()
    retry_after_max_s: float = Field(default=10.0, ge=0)
    enforce: bool = True
    grpc_on: list[GrpcRetryOn] = ["unavailable"]  # never deadline-exceeded

    @model_validator(mode="before")
    @classmethod
    def _statuses_in_on(cls, value: Any) -> Any:
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
                value["statuses"] = (
                    [*statuses, *numbers] if isinstance(statuses, list) else statuses
                )
        return value

    @field_validator("statuses")
    @classmethod
    def _status_range(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 100 <= status <= 599:
                raise ValueError(f"retriable status {status} is not in 100..599")
        return value

    @model_validator(mode="after")
    def _check(self) -> RetryModel:
        if self.backoff_base_ms > self.backoff_max_ms:
            raise ValueError("backoff_base_ms must be <= backoff_max_ms")
        return self


class RateLimitModel(_Model):
    rps: PositiveS
    burst: float = Field(default=0.0, ge=0)  # 0: one second's worth
    per_identity: bool = False
    max_identities: int = Field(default=10_000, ge=1)
    enforce: bool = True


class DelayModel(_Model):
    ms: float = Field(ge=0)
    percent: float = Field(default=100.0, ge=0, le=100)


class AbortModel(_Model):
    status: int = Field(default=503, ge=200, le=599)
    percent: float = Field(default=100.0, ge=0, le=100)


class FaultModel(_Model):
    delay: DelayModel | None = None
    abort: AbortModel | None = None
    enforce: bool = True


class FallbackResponseModel(_Model):
    status: int = Field(default=200, ge=200, le=599)
    headers: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")], str] = {}
    body: str = ""


class FallbackModel(_Model):
    on: list[Literal[tuple(sorted(TRIGGERS))]] = sorted(DEFAULT_ON)  # type: ignore[valid-type]
    response: FallbackResponseModel | None = None  # answer directly, or
    upstream: str | None = None  # send the request to this upstream instead
    enforce: bool = True  # False: observe only (span meshlens.fallback.would_serve)

    @model_validator(mode="after")
    def _one(self) -> FallbackModel:
        if (self.response is None) == (self.upstream is None):
            raise ValueError("a fallback needs exactly one of response or upstream")
        return self


class RouteModel(_Model):
    name: str = Field(pattern=_ROUTE_NAME, max_length=64)
    match: MatchModel = MatchModel()
    destinations: list[DestinationModel] = Field(min_length=1)
    timeout: TimeoutModel = TimeoutModel()
    retry: RetryModel | None = None
    ratelimit: RateLimitModel | None = None
    fault: FaultModel | None = None
    fallback: FallbackModel | None = None  # when the upstream cannot take the request


class InboundModel(_Model):
    timeout: TimeoutModel = TimeoutModel()
    ratelimit: RateLimitModel | None = None
    retry: RetryModel | None = None  # towards the local app (e.g. on reset, like Istio)
    max_request_body_buffer_bytes: int | None = Field(default=None, ge=0)  # None: top level's
    app_protocol: Literal["http1", "h2", "grpc", "auto"] = "auto"  # to the local app


class MtlsModel(_Model):
    mode: Literal["strict", "permissive", "off"] | None = None  # None: the --mtls flag's mode


class AuthzRuleModel(_Model):
    name: str = Field(pattern=_ROUTE_NAME, max_length=64)
    action: Literal["allow", "deny", "audit"]
    principals: list[Annotated[str, Field(min_length=1, pattern=r"^[^*]*\*?$")]] = []
    methods: list[str] = []
    paths: list[Annotated[str, Field(pattern=r"^/[^*]*\*?$|^\*$")]] = []
    claims: dict[str, str] = {}  # verified JWT claims that must hold, e.g. {role: admin}

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        out = [m.upper() for m in value]
        bad = [m for m in out if not m.isalpha()]
        if bad:
            raise ValueError(f"not HTTP methods: {bad}")
        return out


class AuthzModel(_Model):
    enforce: bool = True  # false: observe only (record would-deny, let it through)
    rules: list[AuthzRuleModel] = []

    @model_validator(mode="after")
    def _unique(self) -> AuthzModel:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"authz rule names must be unique: {dupes}")
        return self


class JwksModel(_Model):
    url: str = ""  # http://host[:port]/path, fetched through the sidecar's upstream pool
    file: str = ""  # re-read when it changes
    inline: str = ""  # the JWKS JSON itself
    cache_s: PositiveS = 600.0  # Envoy remote_jwks cache_duration
    timeout_s: PositiveS = 2.0
    min_refetch_interval_s: float = Field(default=10.0, ge=0)  # unknown kid: refetch at most

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if value and not re.match(r"^http://[^/?#]+", value):
            raise ValueError(f"must be an http://host[:port]/path URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one(self) -> JwksModel:
        if sum(bool(v) for v in (self.url, self.file, self.inline)) != 1:
            raise ValueError("jwks needs exactly one of url, file, inline")
        return self


class TokenSourceModel(_Model):
    header: str = ""  # e.g. authorization (with prefix "Bearer ")
    prefix: str = ""
    param: str = ""  # a query parameter, e.g. access_token

    @model_validator(mode="after")
    def _one(self) -> TokenSourceModel:
        if bool(self.header) == bool(self.param):
            raise ValueError("a token source is either a header or a param")
        return self


class ClaimHeaderModel(_Model):
    claim: str = Field(min_length=1)
    header: str = Field(pattern=r"^[A-Za-z0-9-]+$")


class JwtProviderModel(_Model):
    name: str = Field(pattern=_ROUTE_NAME, max_length=64)
    issuer: str = Field(min_length=1)
    audiences: list[str] = []  # empty: aud not checked
    jwks: JwksModel
    algorithms: list[Literal[tuple(sorted(ALGORITHMS))]] = sorted(ALGORITHMS)  # type: ignore[valid-type]
    sources: list[TokenSourceModel] = [TokenSourceModel(header="authorization", prefix="Bearer ")]
    forward: bool = False  # Envoy default: strip the token
    forward_payload_header: str = Field(default="", pattern=r"^$|^[A-Za-z0-9-]+$")
    claim_to_headers: list[ClaimHeaderModel] = []
    clock_skew_s: float = Field(default=60.0, ge=0)  # Envoy clock_skew_seconds
    require_expiration: bool = False


class JwtRuleModel(_Model):
    path_prefix: str = Field(default="/", pattern=r"^/")
    methods: list[str] = []
    requires: Literal["required", "allow_missing", "allow_missing_or_failed", "none"] = "required"
    providers: list[str] = []  # empty: any provider


class JwtModel(_Model):
    enforce: bool = True  # false: observe only (record would-deny, let it through)
    providers: list[JwtProviderModel] = []
    rules: list[JwtRuleModel] = []  # first match wins; none matches: default_requires
    default_requires: Literal["required", "allow_missing", "allow_missing_or_failed", "none"] = (
        "required"
    )

    @model_validator(mode="after")
    def _names(self) -> JwtModel:
        names = [p.name for p in self.providers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        unknown = sorted({n for r in self.rules for n in r.providers} - set(names))
        if dupes or unknown:
            raise ValueError(f"duplicate providers {dupes}, rules name unknown providers {unknown}")
        return self


class DocumentModel(_Model):
    version: str = "0"
    service: str = Field(default="", pattern=r"^$|" + _NAME)
    outbound_policy: Literal["allow_any", "registry_only"] = "allow_any"  # Istio ALLOW_ANY
    max_request_body_buffer_bytes: int = Field(
        default=65_536, ge=0
    )  # Linkerd: > 64 KiB never retried
    ratelimit: RateLimitModel | None = None  # all outbound requests, before routing
    upstreams: dict[Annotated[str, Field(pattern=_NAME, max_length=253)], UpstreamModel] = {}
    routes: list[RouteModel] = []
    inbound: InboundModel = InboundModel()
    mtls: MtlsModel = MtlsModel()
    authz: AuthzModel = AuthzModel()  # inbound authorization; no rules: allow everything
    jwt: JwtModel = JwtModel()  # inbound end-user authentication; no providers: off

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


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


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part:
            continue  # pydantic's validator-wrapper names are noise in a config path
        else:
            out += f".{part}" if out else part
    return out or "(document)"


def _pydantic_errors(exc: ValidationError) -> list[str]:
    errors = []
    for err in exc.errors(include_url=False):
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        errors.append(f"{_path(tuple(err['loc']))}: {message}")
    return errors


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
    model: DocumentModel | None = None
    try:
        model = DocumentModel.model_validate(dict(doc))
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc))
    errors.extend(_cross_errors(doc))
    if errors or model is None:
        raise ConfigError(errors)
    try:
        return _to_config(model)
    except ValueError as exc:  # a dataclass invariant pydantic did not already cover
        raise ConfigError([f"(document): {exc}"]) from exc


def _timeout(m: TimeoutModel) -> TimeoutConfig:
    return TimeoutConfig(m.request_s, m.per_try_s, m.idle_s, m.propagate, m.enforce)


def _per_try(m: TimeoutModel) -> float | None:
    """The per-try timeout the retry layer enforces (none when timeouts only observe)."""
    return m.per_try_s if m.enforce else None


def _retry(m: RetryModel | None, per_try_s: float | None, buffer_bytes: int) -> RetryConfig | None:
    if m is None:
        # a per-try timeout alone still needs the retry layer to enforce it (one attempt)
        return None if per_try_s is None else RetryConfig(attempts=1, per_try_s=per_try_s)
    budget = m.budget
    return RetryConfig(
        attempts=m.attempts,
        on=frozenset(m.on),
        statuses=frozenset(m.statuses),
        allow_non_idempotent=m.allow_non_idempotent,
        backoff_base_ms=m.backoff_base_ms,
        backoff_max_ms=m.backoff_max_ms,
        budget=BudgetConfig(budget.ratio, budget.min_per_s, budget.window_s) if budget else None,
        retry_after_max_s=m.retry_after_max_s,
        per_try_s=per_try_s,
        max_buffer_bytes=buffer_bytes,
        enforce=m.enforce,
        grpc_on=frozenset(m.grpc_on),
    )


def _ratelimit(m: RateLimitModel | None) -> RateLimitConfig | None:
    if m is None:
        return None
    return RateLimitConfig(m.rps, m.burst, m.per_identity, m.max_identities, m.enforce)


def _fault(m: FaultModel | None) -> FaultConfig | None:
    if m is None or (m.delay is None and m.abort is None):
        return None
    return FaultConfig(
        delay_ms=m.delay.ms if m.delay else 0.0,
        delay_percent=m.delay.percent if m.delay else 0.0,
        abort_status=m.abort.status if m.abort else 503,
        abort_percent=m.abort.percent if m.abort else 0.0,
        enforce=m.enforce,
    )


def _outlier(m: OutlierModel | None) -> OutlierConfig | None:
    if m is None:
        return None
    rate, lat = m.success_rate, m.latency
    return OutlierConfig(
        consecutive_5xx=m.consecutive_5xx,
        consecutive_gateway_failures=m.consecutive_gateway_failures,
        success_rate=SuccessRateConfig(rate.window_s, rate.min_requests, rate.threshold)
        if rate
        else None,
        latency=LatencyConfig(lat.factor, lat.min_requests, lat.min_latency_ms) if lat else None,
        base_ejection_s=m.base_ejection_s,
        max_ejection_s=m.max_ejection_s,
        max_ejection_percent=m.max_ejection_percent,
        interval_s=m.interval_s,
        enforce=m.enforce,
    )


def _upstream(name: str, m: UpstreamModel) -> UpstreamSpec:
    endpoints = tuple(
        Endpoint(
            e.host,
            e.port,
            service=name,
            instance=e.labels.get("instance", f"{e.host}:{e.port}"),
            weight=e.weight,
            labels=tuple(sorted(e.labels.items())),
            identity=e.identity,
        )
        for e in m.endpoints
    )
    limits = m.limits
    return UpstreamSpec(
        protocol=m.protocol,
        name=name,
        endpoints=endpoints,
        balance=BalanceConfig(
            lb=m.lb, slow_start_s=m.slow_start_s, connect_timeout_s=m.connect_timeout_s
        ),
        limits=BreakerConfig(
            max_connections=limits.max_connections,
            max_pending=limits.max_pending,
            max_requests=limits.max_requests,
            pending_timeout_s=limits.pending_timeout_s,
            enforce=limits.enforce,
        ),
        outlier=_outlier(m.outlier),
    )


def _route(m: RouteModel, buffer_bytes: int) -> RouteSpec:
    headers = tuple(
        HeaderMatch(name.lower(), exact=h)
        if isinstance(h, str)
        else HeaderMatch(name.lower(), exact=h.exact, regex=h.regex)
        for name, h in m.match.headers.items()
    )
    rule = RouteRule(
        name=m.name,
        match=MatchConfig(
            hosts=frozenset(m.match.hosts),
            path_prefix=m.match.path_prefix,
            headers=headers,
            methods=frozenset(m.match.methods),
        ),
        destinations=tuple(Destination(d.upstream, d.weight) for d in m.destinations),
    )
    return RouteSpec(
        rule=rule,
        timeout=_timeout(m.timeout),
        retry=_retry(m.retry, _per_try(m.timeout), buffer_bytes),
        ratelimit=_ratelimit(m.ratelimit),
        fault=_fault(m.fault),
        fallback=_fallback(m.fallback),
    )


def _fallback(m: FallbackModel | None) -> FallbackConfig | None:
    if m is None:
        return None
    response = None
    if m.response is not None:
        r = m.response
        headers = tuple((k.lower(), v) for k, v in r.headers.items())
        response = FallbackResponse(r.status, headers, r.body.encode())
    return FallbackConfig(
        on=frozenset(m.on), response=response, upstream=m.upstream or "", enforce=m.enforce
    )


def _to_config(m: DocumentModel) -> SidecarConfig:
    buffer_bytes = m.max_request_body_buffer_bytes
    routes = tuple(_route(r, buffer_bytes) for r in m.routes)
    inbound_buffer = m.inbound.max_request_body_buffer_bytes
    inbound_buffer = buffer_bytes if inbound_buffer is None else inbound_buffer
    return SidecarConfig(
        version=m.version,
        service=m.service,
        routing=RoutingConfig(
            routes=tuple(r.rule for r in routes),
            services=frozenset(m.upstreams),
            outbound_policy=m.outbound_policy,
        ),
        upstreams={name: _upstream(name, u) for name, u in m.upstreams.items()},
        routes=routes,
        inbound=InboundSpec(
            timeout=_timeout(m.inbound.timeout),
            ratelimit=_ratelimit(m.inbound.ratelimit),
            retry=_retry(m.inbound.retry, _per_try(m.inbound.timeout), inbound_buffer),
            app_protocol=m.inbound.app_protocol,
        ),
        ratelimit=_ratelimit(m.ratelimit),
        max_request_body_buffer_bytes=buffer_bytes,
        document=m.model_dump(mode="json"),
        authz=_authz(m.authz),
        mtls_mode=m.mtls.mode,
        jwt=_jwt(m.jwt),
    )


def _jwt(m: JwtModel) -> JwtConfig:
    providers = tuple(
        JwtProvider(
            name=p.name,
            issuer=p.issuer,
            jwks=JwksConfig(
                url=p.jwks.url,
                file=p.jwks.file,
                inline=p.jwks.inline,
                cache_s=p.jwks.cache_s,
                timeout_s=p.jwks.timeout_s,
                min_refetch_interval_s=p.jwks.min_refetch_interval_s,
            ),
            audiences=frozenset(p.audiences),
            algorithms=frozenset(p.algorithms),
            sources=tuple(TokenSource(s.header.lower(), s.prefix, s.param) for s in p.sources),
            forward=p.forward,
            forward_payload_header=p.forward_payload_header.lower(),
            claim_to_headers=tuple((c.claim, c.header.lower()) for c in p.claim_to_headers),
            clock_skew_s=p.clock_skew_s,
            require_expiration=p.require_expiration,
        )
        for p in m.providers
    )
    rules = tuple(
        JwtRule(
            path_prefix=r.path_prefix,
            methods=frozenset(x.upper() for x in r.methods),
            requires=r.requires,
            providers=tuple(r.providers),
        )
        for r in m.rules
    )
    return JwtConfig(providers, rules, default_requires=m.default_requires, enforce=m.enforce)


def _authz(m: AuthzModel) -> AuthzConfig:
    rules = tuple(
        AuthzRule(
            name=r.name,
            action=r.action,
            principals=tuple(r.principals),
            methods=frozenset(r.methods),
            paths=tuple(r.paths),
            claims=tuple(sorted(r.claims.items())),
        )
        for r in m.rules
    )
    return AuthzConfig(rules=rules, enforce=m.enforce)


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
        return parse_config({} if doc is None else doc)
    import yaml

    try:
        doc = yaml.load(text, Loader=_yaml12_loader())
    except yaml.YAMLError as exc:
        raise ConfigError(
            [f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"]
        ) from exc
    if doc is None:
        doc = {}
    return parse_config(doc)


def config_to_dict(config: SidecarConfig) -> dict[str, Any]:
    """The effective document (defaults filled in), as plain JSON-able data for /config."""
    return json.loads(json.dumps(config.document))  # type: ignore[no-any-return]
