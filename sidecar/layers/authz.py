"""Inbound authorization: allow / deny / audit rules on the caller's identity, method and path.

Rules may also match verified end-user JWT claims (`claims: {role: admin}`, `!admin`: not
admin; set by layers/jwt.py). Deny rules win; then, if any allow rule exists, a request no allow
rule matches is denied; audit rules only record. With no rules every request is allowed.
`enforce: false` records what would have been denied and lets it through. Denials answer 403
with `x-meshlens-error: rbac_denied`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sidecar.errors import ERROR_HEADER, Forbidden
from sidecar.http import Request, Response
from sidecar.stack import Handler, Layer

__all__ = ["Authorizer", "AuthzConfig", "AuthzRule", "Decision", "authz_layer"]

logger = logging.getLogger(__name__)

Action = Literal["allow", "deny", "audit"]
ACTIONS: tuple[str, ...] = ("allow", "deny", "audit")


def _pattern_ok(pattern: str) -> bool:
    return bool(pattern) and "*" not in pattern[:-1]


def _matches(pattern: str, value: str) -> bool:
    """Exact match, or a prefix match when `pattern` ends in `*` (`*` alone: any non-empty)."""
    if pattern.endswith("*"):
        return bool(value) and value.startswith(pattern[:-1])
    return value == pattern


def _claim_holds(claims: Mapping[str, object] | None, name: str, want: str) -> bool:
    """`want`, or with a leading `!` its negation (also true when the claim is absent)."""
    if want.startswith("!"):
        return not _claim_has(claims, name, want[1:])
    return _claim_has(claims, name, want)


def _claim_has(claims: Mapping[str, object] | None, name: str, want: str) -> bool:
    """The claim at dotted path `name` equals `want` (a list claim: contains it)."""
    value: object = claims
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return False
        value = value.get(part)
    if isinstance(value, list):
        return any(_claim_equals(v, want) for v in value)
    return _claim_equals(value, want)


def _claim_equals(value: object, want: str) -> bool:
    if isinstance(value, bool):
        return want == ("true" if value else "false")
    return isinstance(value, str | int | float) and str(value) == want


@dataclass(frozen=True, slots=True)
class AuthzRule:
    """One rule; an empty field matches anything (principals: also an unauthenticated caller)."""

    name: str
    action: Action
    principals: tuple[str, ...] = ()
    methods: frozenset[str] = frozenset()
    paths: tuple[str, ...] = ()
    claims: tuple[tuple[str, str], ...] = ()  # JWT claims (dotted path, value or !value)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("rule name must not be empty")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")
        for pattern in (*self.principals, *self.paths):
            if not _pattern_ok(pattern):
                raise ValueError(f"{pattern!r}: '*' is only allowed at the end of a pattern")
        for method in self.methods:
            if method != method.upper() or not method.isalpha():
                raise ValueError(f"method {method!r} must be an upper-case HTTP method")

    def matches(
        self, principal: str, method: str, path: str, claims: Mapping[str, object] | None = None
    ) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.claims and not all(_claim_holds(claims, n, v) for n, v in self.claims):
            return False
        if self.principals and not any(_matches(p, principal) for p in self.principals):
            return False
        return not self.paths or any(_matches(p, path) for p in self.paths)


@dataclass(frozen=True, slots=True)
class AuthzConfig:
    rules: tuple[AuthzRule, ...] = ()
    enforce: bool = True

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("authz rule names must be unique")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str  # the deciding rule, "no_allow_match", or "" (default allow)
    audited: tuple[str, ...] = ()


class Authorizer:
    """Evaluates the rules; keeps decision counts for /stats."""

    def __init__(self, config: AuthzConfig) -> None:
        self.config = config
        self.counts: dict[str, int] = {}
        rules = config.rules
        self._deny = tuple(r for r in rules if r.action == "deny")
        self._allow = tuple(r for r in rules if r.action == "allow")
        self._audit = tuple(r for r in rules if r.action == "audit")

    def decide(
        self, principal: str, method: str, path: str, claims: Mapping[str, object] | None = None
    ) -> Decision:
        audited = tuple(r.name for r in self._audit if r.matches(principal, method, path, claims))
        for rule in self._deny:
            if rule.matches(principal, method, path, claims):
                return Decision(False, rule.name, audited)
        if self._allow:
            for rule in self._allow:
                if rule.matches(principal, method, path, claims):
                    return Decision(True, rule.name, audited)
            return Decision(False, "no_allow_match", audited)
        return Decision(True, "", audited)

    def count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def stats(self) -> dict[str, object]:
        return {"enforce": self.config.enforce, "rules": len(self.config.rules), **self.counts}


def _denied(rule: str, principal: str) -> Response:
    exc = Forbidden(f"denied by authorization rule {rule} for {principal or 'unauthenticated'}")
    return Response(
        status=exc.status,
        headers=((ERROR_HEADER, exc.reason), ("content-type", "text/plain; charset=utf-8")),
        body=(str(exc) + "\n").encode(),
    )


def authz_layer(config: AuthzConfig, *, authorizer: Authorizer | None = None) -> Layer:
    """Refuse (or, observe-only, record) the calls the rules deny; see the module docstring."""
    auth = authorizer if authorizer is not None else Authorizer(config)
    if not config.rules:
        return lambda inner: inner  # default allow: no per-request cost until a policy exists

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            context = request.context
            principal = context.peer_identity
            decision = auth.decide(principal, request.method, request.path, context.claims)
            if decision.audited:
                context.attributes["meshlens.authz.audit"] = ",".join(decision.audited)
                auth.count("audited")
            if decision.allowed:
                auth.count("allowed")
                return await inner(request)
            context.attributes["meshlens.authz.rule"] = decision.rule
            if not config.enforce:
                context.attributes["meshlens.authz.would_deny"] = True
                auth.count("would_deny")
                return await inner(request)
            auth.count("denied")
            context.attributes["meshlens.error.reason"] = Forbidden.reason
            return _denied(decision.rule, principal)

        return handle

    return wrap
