"""Inbound end-user authentication: verify JWTs (issuer, audience, expiry, signature against the
provider's JWKS) before authorization, so authz rules can match claims (Envoy jwt_authn).

On success the claims and subject go into the request context (and `enduser.id` /
`meshlens.jwt.subject` onto the span); on failure the caller gets 401 with the reason.
`enforce: false` records what would have been refused and lets the request through.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from sidecar.errors import ERROR_HEADER, Unauthenticated
from sidecar.http import Headers, Request, Response, header_value, without_headers
from sidecar.jwks import ALGORITHMS, Fetch, JwksConfig, JwkSet, JwksSource, b64url_decode
from sidecar.stack import Clock, Handler, Layer, monotonic

__all__ = [
    "Authenticator",
    "JwtConfig",
    "JwtFailure",
    "JwtProvider",
    "JwtRule",
    "TokenSource",
    "jwt_layer",
]

logger = logging.getLogger(__name__)

Requires = Literal["required", "allow_missing", "allow_missing_or_failed", "none"]
REQUIRES: tuple[str, ...] = ("required", "allow_missing", "allow_missing_or_failed", "none")
WallClock = Clock  # seconds since the epoch (token exp/nbf/iat)
_CACHE_SIZE = 1024  # verified tokens kept (Envoy jwt_cache_size default: 100)

# reason label (closed set, for spans and stats) -> message in the 401 body (Envoy's wording)
MESSAGES: dict[str, str] = {
    "missing": "Jwt is missing",
    "malformed": "Jwt is not in the form of Header.Payload.Signature or is not valid JSON",
    "bad_algorithm": "Jwt algorithm is not allowed (alg none or not accepted by the provider)",
    "unknown_issuer": "Jwt issuer is not configured",
    "expired": "Jwt is expired",
    "not_yet_valid": "Jwt not yet valid",
    "no_expiration": "Jwt has no expiration (exp) and the provider requires one",
    "bad_audience": "Audiences in Jwt are not allowed",
    "unknown_kid": "Jwks doesn't have key to match kid or alg from Jwt",
    "bad_signature": "Jwt verification fails",
    "jwks_unavailable": "Jwks remote fetch is failed",
    "multiple_tokens": "More than one Jwt in the request",
}


@dataclass(frozen=True, slots=True)
class TokenSource:
    """Where a token is read from: a header (with an optional prefix) or a query parameter."""

    header: str = ""
    prefix: str = ""
    param: str = ""

    def __post_init__(self) -> None:
        if bool(self.header) == bool(self.param):
            raise ValueError("a token source is either a header or a query parameter")
        if self.header != self.header.lower():
            raise ValueError(f"header name {self.header!r} must be lower-case")


DEFAULT_SOURCES = (TokenSource(header="authorization", prefix="Bearer "),)


@dataclass(frozen=True, slots=True)
class JwtProvider:
    """One token issuer and how its tokens are found, checked and passed on."""

    name: str
    issuer: str
    jwks: JwksConfig
    audiences: frozenset[str] = frozenset()  # empty: the aud claim is not checked
    algorithms: frozenset[str] = ALGORITHMS
    sources: tuple[TokenSource, ...] = DEFAULT_SOURCES
    forward: bool = False  # Envoy default: strip the token before the app sees it
    forward_payload_header: str = ""  # base64url payload for the app, e.g. x-jwt-payload
    claim_to_headers: tuple[tuple[str, str], ...] = ()  # (claim, header), e.g. (sub, x-user)
    clock_skew_s: float = 60.0  # Envoy clock_skew_seconds default
    require_expiration: bool = False  # Envoy default: a token without exp never expires

    def __post_init__(self) -> None:
        if not self.name or not self.issuer:
            raise ValueError("a JWT provider needs a name and an issuer")
        bad = sorted(self.algorithms - ALGORITHMS)
        if bad or not self.algorithms:
            raise ValueError(f"algorithms must be a non-empty subset of {sorted(ALGORITHMS)}")
        if not self.sources:
            raise ValueError("a JWT provider needs at least one token source")
        if self.clock_skew_s < 0:
            raise ValueError("clock_skew_s must be >= 0")


@dataclass(frozen=True, slots=True)
class JwtRule:
    """Requests whose path starts with `path_prefix` (and method in `methods`) need `requires`
    from one of `providers` (empty: any provider)."""

    path_prefix: str = "/"
    methods: frozenset[str] = frozenset()
    requires: Requires = "required"
    providers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.path_prefix.startswith("/"):
            raise ValueError(f"path_prefix must start with '/', got {self.path_prefix!r}")
        if self.requires not in REQUIRES:
            raise ValueError(f"requires must be one of {REQUIRES}, got {self.requires!r}")

    def matches(self, method: str, path: str) -> bool:
        return path.startswith(self.path_prefix) and (not self.methods or method in self.methods)


@dataclass(frozen=True, slots=True)
class JwtConfig:
    """Providers and rules; first matching rule wins, else `default_requires` with any provider."""

    providers: tuple[JwtProvider, ...] = ()
    rules: tuple[JwtRule, ...] = ()
    default_requires: Requires = "required"
    enforce: bool = True

    def __post_init__(self) -> None:
        names = [p.name for p in self.providers]
        if len(names) != len(set(names)):
            raise ValueError("JWT provider names must be unique")
        for rule in self.rules:
            unknown = sorted(set(rule.providers) - set(names))
            if unknown:
                raise ValueError(f"JWT rule {rule.path_prefix!r}: unknown providers {unknown}")
        if self.default_requires not in REQUIRES:
            raise ValueError(f"default_requires must be one of {REQUIRES}")


class JwtFailure(Exception):
    """A token was refused; `reason` is a label from MESSAGES."""

    def __init__(self, reason: str) -> None:
        super().__init__(MESSAGES[reason])
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Verified:
    provider: JwtProvider
    claims: Mapping[str, Any]
    payload_b64: str


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON (RFC 8259) does not have
    raise ValueError(f"{constant} is not JSON")


def _decode_json(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment), parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # (Recursion: [[[[...]]]])
        raise JwtFailure("malformed") from exc
    if not isinstance(value, dict):
        raise JwtFailure("malformed")
    return value


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2): a finite JSON number. 1e400 reads as infinity (an
    `exp` that never comes) and a 400-digit integer cannot be a float: both are malformed."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JwtFailure("malformed")
    try:
        number = float(value)
    except OverflowError as exc:
        raise JwtFailure("malformed") from exc
    if not math.isfinite(number):
        raise JwtFailure("malformed")
    return number


class Authenticator:
    """Verifies tokens for one config version; keeps JWKS caches of unchanged providers."""

    def __init__(
        self,
        config: JwtConfig,
        *,
        fetch: Fetch | None = None,
        clock: Clock = monotonic,
        wall: WallClock = time.time,
        previous: Authenticator | None = None,
    ) -> None:
        self.config = config
        self._wall = wall
        self.providers = {p.name: p for p in config.providers}
        self.sources: dict[str, JwksSource] = {}
        for p in config.providers:
            old = previous.sources.get(p.name) if previous is not None else None
            reuse = old is not None and old.config == p.jwks
            self.sources[p.name] = (
                old if old is not None and reuse else JwksSource(p.jwks, fetch, clock)
            )
        self.counts: dict[str, int] = {}
        # token -> (result, the key set that verified it): a hit skips the signature check
        # while that set is current (Envoy jwt_cache_config); times are checked on every hit
        self._cache: OrderedDict[str, tuple[Verified, JwkSet]] = OrderedDict()

    def requirement(self, method: str, path: str) -> tuple[Requires, tuple[JwtProvider, ...]]:
        for rule in self.config.rules:
            if rule.matches(method, path):
                names = rule.providers or tuple(self.providers)
                return rule.requires, tuple(self.providers[n] for n in names)
        return self.config.default_requires, self.config.providers

    def count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def stats(self) -> dict[str, object]:
        return {
            "enforce": self.config.enforce,
            "providers": {name: s.stats() for name, s in self.sources.items()},
            **self.counts,
        }

    async def verify(self, token: str, providers: tuple[JwtProvider, ...]) -> Verified:
        """Check `token` against the provider its `iss` names; raise JwtFailure with the reason."""
        hit = self._cache.get(token)
        if hit is not None:
            verified, keys = hit
            source = self.sources[verified.provider.name]
            # keys() refreshes a stale set (cache_s, file change); a new set re-verifies
            if verified.provider in providers and await source.keys() is keys:
                self._check_times(verified.provider, verified.claims)
                self._cache.move_to_end(token)
                return verified
            self._cache.pop(token, None)
        verified, keys = await self._verify(token, providers)
        self._cache[token] = (verified, keys)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return verified

    async def _verify(
        self, token: str, providers: tuple[JwtProvider, ...]
    ) -> tuple[Verified, JwkSet]:
        parts = token.split(".")
        if len(parts) != 3 or not all(parts[:2]):
            raise JwtFailure("malformed")
        header, claims = _decode_json(parts[0]), _decode_json(parts[1])
        if "crit" in header:
            raise JwtFailure("malformed")  # we understand no critical extensions (RFC 7515 §4.1.11)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise JwtFailure("bad_algorithm")  # none, HS*, anything we cannot verify
        issuer = claims.get("iss")
        provider = next((p for p in providers if p.issuer == issuer), None)
        if provider is None:
            raise JwtFailure("unknown_issuer")
        if alg not in provider.algorithms:
            raise JwtFailure("bad_algorithm")
        self._check_times(provider, claims)
        if provider.audiences:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(isinstance(a, str) and a in provider.audiences for a in auds):
                raise JwtFailure("bad_audience")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JwtFailure("malformed")
        try:
            signature = b64url_decode(parts[2])
        except ValueError as exc:
            raise JwtFailure("malformed") from exc
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
        keys = await self._check_signature(provider, kid, alg, signing_input, signature)
        return Verified(provider, claims, parts[1]), keys

    def _check_times(self, provider: JwtProvider, claims: Mapping[str, Any]) -> None:
        now, skew = self._wall(), provider.clock_skew_s
        exp, nbf = _number(claims, "exp"), _number(claims, "nbf")
        if exp is None and provider.require_expiration:
            raise JwtFailure("no_expiration")
        if exp is not None and now >= exp + skew:
            raise JwtFailure("expired")
        if nbf is not None and now + skew < nbf:
            raise JwtFailure("not_yet_valid")

    async def _check_signature(
        self, provider: JwtProvider, kid: str | None, alg: str, data: bytes, signature: bytes
    ) -> JwkSet:
        source = self.sources[provider.name]
        keys = await source.keys()
        candidates = keys.candidates(kid, alg) if keys is not None else ()
        if not candidates and kid is not None:
            keys = await source.keys(kid_missing=True)  # rotated: refetch (rate-limited)
            candidates = keys.candidates(kid, alg) if keys is not None else ()
        if keys is None:
            raise JwtFailure("jwks_unavailable")
        if not candidates:
            raise JwtFailure("unknown_kid")
        if not any(k.verify(alg, data, signature) for k in candidates):
            raise JwtFailure("bad_signature")
        return keys


def _find_tokens(request: Request, providers: tuple[JwtProvider, ...]) -> list[str]:
    found: list[str] = []
    query = request.target.partition("?")[2]
    for source in dict.fromkeys(s for p in providers for s in p.sources):
        prefix = source.prefix.lower()  # auth schemes are case-insensitive (RFC 9110 §11.1)
        if source.header:
            for name, value in request.headers:
                if name == source.header and value[: len(prefix)].lower() == prefix:
                    token = value[len(source.prefix) :].strip()
                    if token and token not in found:
                        found.append(token)
        else:
            for pair in query.split("&"):
                key, _, value = pair.partition("=")
                if key == source.param and value and value not in found:
                    found.append(value)
    return found


def _strip_token(request: Request, verified: Verified, token: str) -> Headers:
    headers = request.headers
    provider = verified.provider
    if not provider.forward:
        headers = tuple(
            (k, v)
            for k, v in headers
            if not any(k == s.header and token in v for s in provider.sources if s.header)
        )
    if provider.forward_payload_header:
        headers = (*headers, (provider.forward_payload_header, verified.payload_b64))
    for claim, header in provider.claim_to_headers:
        value = verified.claims.get(claim)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            headers = (*headers, (header, str(value)))
    return headers


def _unauthorized(reason: str, realm: str) -> Response:
    exc = Unauthenticated(f"JWT authentication failed ({reason}): {MESSAGES[reason]}")
    challenge = f'Bearer realm="{realm}", error="invalid_token"'
    if reason == "missing":
        challenge = f'Bearer realm="{realm}"'  # RFC 6750 §3: no error code without a token
    return Response(
        status=exc.status,
        headers=(
            (ERROR_HEADER, exc.reason),
            ("www-authenticate", challenge),
            ("x-meshlens-jwt-error", reason),
            ("content-type", "text/plain; charset=utf-8"),
        ),
        body=(str(exc) + "\n").encode(),
    )


def _spoofable(config: JwtConfig) -> frozenset[str]:
    """Headers only we may set (claim/payload headers): dropped from every incoming request."""
    names = {h for p in config.providers for _, h in p.claim_to_headers}
    names |= {p.forward_payload_header for p in config.providers if p.forward_payload_header}
    return frozenset(names)


def jwt_layer(config: JwtConfig, *, authenticator: Authenticator) -> Layer:
    """Authenticate end users per the rules; see the module docstring."""
    if not config.providers:
        return lambda inner: inner  # nothing configured: no per-request cost
    auth = authenticator
    spoofable = _spoofable(config)

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            requires, providers = auth.requirement(request.method, request.path)
            if spoofable:
                request = _with_headers(request, without_headers(request.headers, spoofable))
            if requires == "none":
                return await inner(request)
            tokens = _find_tokens(request, providers)
            try:
                if len(tokens) > 1:
                    raise JwtFailure("multiple_tokens")
                if not tokens:
                    if requires != "required":
                        auth.count("missing_allowed")
                        return await inner(request)
                    raise JwtFailure("missing")
                verified = await auth.verify(tokens[0], providers)
            except JwtFailure as failure:
                return await _refuse(request, inner, failure.reason, requires)
            _record(request, verified)
            auth.count("verified")
            return await inner(_with_headers(request, _strip_token(request, verified, tokens[0])))

        async def _refuse(request: Request, inner: Handler, reason: str, requires: str) -> Response:
            attrs = request.context.attributes
            attrs["meshlens.jwt.error"] = reason
            if requires == "allow_missing_or_failed":
                auth.count("failed_allowed")
                return await inner(request)
            if not config.enforce:
                attrs["meshlens.jwt.would_deny"] = True
                auth.count("would_deny")
                return await inner(request)
            auth.count(f"denied_{reason}")
            attrs["meshlens.error.reason"] = Unauthenticated.reason
            realm = request.authority or header_value(request.headers, "host") or "meshlens"
            return _unauthorized(reason, realm)

        return handle

    return wrap


def _record(request: Request, verified: Verified) -> None:
    context = request.context
    claims = verified.claims
    subject = claims.get("sub")
    context.claims = dict(claims)
    context.subject = subject if isinstance(subject, str) else ""
    attrs = context.attributes
    attrs["meshlens.jwt.provider"] = verified.provider.name
    if context.subject:
        attrs["meshlens.jwt.subject"] = context.subject
        attrs["enduser.id"] = context.subject


def _with_headers(request: Request, headers: Headers) -> Request:
    return request if headers is request.headers else replace(request, headers=headers)
