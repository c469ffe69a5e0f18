"""The suggestion lifecycle: states and transitions, applying a change to (and reverting it from)
the caller's policy document, and the before/after verdict that verifies or rolls back.

proposed -> accepted -> observing (enforce: false) -> enforcing -> verified | rolled_back;
proposed -> rejected | superseded.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analytics.tuning.rules import RoutePolicy
from analytics.tuning.stats import EdgeKey, EdgeStats, quantile

__all__ = [
    "LIVE",
    "TRANSITIONS",
    "TransitionError",
    "Verdict",
    "WindowFigures",
    "apply_change",
    "check_transition",
    "compare",
    "latency_allowance_ms",
    "revert_change",
    "route_policy",
    "tuned_route_name",
]

TRANSITIONS: dict[str, frozenset[str]] = {
    "proposed": frozenset({"accepted", "rejected", "superseded"}),
    "accepted": frozenset({"observing", "enforcing"}),
    "observing": frozenset({"enforcing", "rolled_back"}),
    "enforcing": frozenset({"verified", "rolled_back"}),
    "verified": frozenset({"rolled_back"}),
    "rejected": frozenset(),
    "superseded": frozenset(),
    "rolled_back": frozenset(),
}
LIVE = frozenset({"observing", "enforcing", "verified"})
_ENFORCEABLE = ("timeout", "retry", "outlier", "limits", "fallback")
_DEFAULT_ROUTES = ("", "default")


class TransitionError(ValueError):
    """A state change the lifecycle does not allow."""


def check_transition(state: str, to: str) -> None:
    if to not in TRANSITIONS.get(state, frozenset()):
        raise TransitionError(f"a {state} suggestion cannot become {to}")


def tuned_route_name(upstream: str) -> str:
    return f"tuned-{upstream}"


def _find_route(doc: Mapping[str, Any], edge: EdgeKey) -> Mapping[str, Any] | None:
    names = {edge.route} if edge.route not in _DEFAULT_ROUTES else set()
    names.add(tuned_route_name(edge.upstream))
    for route in doc.get("routes", []) or []:
        if route.get("name") in names:
            return dict(route)
    return None


def route_policy(doc: Mapping[str, Any] | None, edge: EdgeKey) -> RoutePolicy:
    """The effective timeout/retry/outlier settings for `edge` in the caller's document."""
    doc = doc or {}
    upstream = (doc.get("upstreams") or {}).get(edge.upstream) or {}
    outlier = upstream.get("outlier") if isinstance(upstream, Mapping) else None
    route = _find_route(doc, edge)
    if route is None:
        # The implicit default route: 15 s, one budgeted retry for idempotent calls.
        return RoutePolicy(15.0, None, 2, 0.2, outlier)
    timeout = route.get("timeout") or {}
    retry = route.get("retry")
    attempts, ratio = 1, None
    on = RoutePolicy().retry_on
    if retry is not None:
        attempts = int(retry.get("attempts", 2))
        budget = retry.get("budget", {"ratio": 0.2})
        ratio = None if budget is None else float(budget.get("ratio", 0.2))
        on = frozenset(retry.get("on", on))
    return RoutePolicy(
        timeout.get("request_s", 15.0), timeout.get("per_try_s"), attempts, ratio, outlier, on
    )


def _merge(base: Mapping[str, Any], change: Mapping[str, Any], observe: bool) -> dict[str, Any]:
    out = dict(base)
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
            continue
        if isinstance(value, Mapping):
            merged = {**(out.get(key) or {}), **value}
            if key in _ENFORCEABLE:
                merged["enforce"] = not observe
            out[key] = merged
        else:
            out[key] = value
    return out


def apply_change(
    doc: Mapping[str, Any] | None,
    caller: str,
    edge: EdgeKey,
    target: str,
    change: Mapping[str, Any],
    *,
    observe: bool,
) -> dict[str, Any]:
    """A new document: `doc` with `change` merged into the edge's route or upstream."""
    new = copy.deepcopy(dict(doc or {}))
    new.setdefault("service", caller)
    upstreams = new.setdefault("upstreams", {})
    if edge.upstream not in upstreams:
        upstreams[edge.upstream] = {}
    if target == "upstream":
        upstreams[edge.upstream] = _merge(upstreams[edge.upstream], change, observe)
        return new
    if target != "route":
        raise TransitionError("an informational finding has nothing to apply")
    routes = new.setdefault("routes", [])
    names = {edge.route, tuned_route_name(edge.upstream)} - set(_DEFAULT_ROUTES)
    for i, route in enumerate(routes):
        if route.get("name") in names:
            routes[i] = _merge(route, change, observe)
            return new
    # Replaces the implicit default route, so it keeps that route's one budgeted retry
    # (`retry: {}` is the schema's defaults) unless the change says otherwise.
    fresh = {
        "name": tuned_route_name(edge.upstream),
        "match": {"hosts": [edge.upstream]},
        "destinations": [{"upstream": edge.upstream}],
        "retry": {},
    }
    routes.append(_merge(fresh, change, observe))
    return new


def revert_change(
    current: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    edge: EdgeKey,
    target: str,
    change: Mapping[str, Any],
) -> dict[str, Any]:
    """`current` with the keys `change` touched restored to their values in `previous`."""
    new = copy.deepcopy(dict(current))
    prev = dict(previous or {})
    if target == "upstream":
        was = (prev.get("upstreams") or {}).get(edge.upstream) or {}
        now = new.setdefault("upstreams", {}).setdefault(edge.upstream, {})
        for key in change:
            if key in was:
                now[key] = copy.deepcopy(was[key])
            else:
                now.pop(key, None)
        return new
    old_route = _find_route(prev, edge)
    routes = new.get("routes", [])
    for i, route in enumerate(routes):
        if old_route is None and route.get("name") == tuned_route_name(edge.upstream):
            del routes[i]  # the route existed only for this suggestion
            return new
        if old_route is not None and route.get("name") == old_route.get("name"):
            for key in change:
                if key in old_route:
                    route[key] = copy.deepcopy(old_route[key])
                else:
                    route.pop(key, None)
            return new
    return new


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """An edge's call-level figures in one window (rates per second of that window)."""

    requests: int
    error_rate: float
    p99_ms: float
    goodput_rps: float
    rps: float = 0.0

    @classmethod
    def of(cls, s: EdgeStats | None) -> WindowFigures:
        if s is None or not s.calls:
            return cls(0, 0.0, 0.0, 0.0)
        durations = sorted(c.duration_ms for c in s.calls)
        ok = sum(not c.failed for c in s.calls)
        n = len(s.calls)
        return cls(n, 1 - ok / n, quantile(durations, 0.99), ok / s.window_s, n / s.window_s)


@dataclass(frozen=True, slots=True)
class Verdict:
    """`better`, `same`, `worse` or `inconclusive`, with the reasons for `worse`."""

    outcome: str
    reasons: tuple[str, ...]
    before: WindowFigures
    after: WindowFigures


def compare(
    before: WindowFigures,
    after: WindowFigures,
    *,
    min_requests: int = 50,
    latency_allowance_ms: float = 0.0,
) -> Verdict:
    """Judge a rollout on the affected edge: error rate, p99 and goodput, before vs after.

    `latency_allowance_ms` is the latency the change is expected to add to the calls it rescues
    (a retry costs up to its extra tries and backoff): turning failures into slower successes
    is what retries are for, not a regression.
    """
    if before.requests < min_requests or after.requests < min_requests:
        return Verdict("inconclusive", ("too few requests to compare",), before, after)
    worse: list[str] = []
    if after.error_rate > before.error_rate * 1.2 + 0.005:
        worse.append(f"error rate {before.error_rate:.2%} -> {after.error_rate:.2%}")
    if after.p99_ms > before.p99_ms * 1.25 + 5.0 + latency_allowance_ms:
        worse.append(f"p99 {before.p99_ms:.0f} -> {after.p99_ms:.0f} ms")
    # Goodput only compares under similar offered load (rates per second of each window).
    load = after.rps / before.rps if before.rps else 0.0
    if 0.8 <= load <= 1.25 and after.goodput_rps < 0.9 * before.goodput_rps:
        worse.append(f"goodput {before.goodput_rps:.1f} -> {after.goodput_rps:.1f}/s")
    if worse:
        return Verdict("worse", tuple(worse), before, after)
    better = (
        after.error_rate < before.error_rate * 0.8 - 0.001 or after.p99_ms < before.p99_ms * 0.8
    )
    return Verdict("better" if better else "same", (), before, after)


def latency_allowance_ms(change: Mapping[str, Any]) -> float:
    """The most latency a change's retries may add to a call: extra tries plus backoff."""
    retry = change.get("retry")
    if not retry:
        return 0.0
    extra = int(retry.get("attempts", 2)) - 1
    per_try_s = (change.get("timeout") or {}).get("per_try_s") or 0.0
    return extra * (per_try_s * 1000 + float(retry.get("backoff_max_ms", 250.0)))
