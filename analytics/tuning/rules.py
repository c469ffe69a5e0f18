"""Suggestion rules: one function per family (timeout, retry, retry budget, outlier, concurrency,
removal, fallback).

Each takes one edge's statistics (analytics/tuning/stats.py) and the caller's current route
policy and returns a `Suggestion`, a `Refusal` (the rule looked and said no, with why) or None.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from analytics.tuning.stats import IDEMPOTENT, EdgeKey, EdgeStats

__all__ = [
    "FALLBACK_TRIGGERS",
    "MIN_LATENCY_SAMPLES",
    "Refusal",
    "RoutePolicy",
    "Suggestion",
    "max_ejection_percent",
    "overload",
    "suggest_budget",
    "suggest_concurrency",
    "suggest_fallback",
    "suggest_outlier",
    "suggest_removal",
    "suggest_retry",
    "suggest_timeout",
]

MIN_LATENCY_SAMPLES = 200
# Proxy errors meaning "the upstream cannot take the request" (sidecar/errors.py reasons, which
# sidecar telemetry writes as the attempt span's error.type): a route fallback's default triggers.
FALLBACK_TRIGGERS = ("circuit_open", "no_healthy_upstream", "overflow")
FALLBACK_MIN_CALLS = 5
# Methods a canned or rerouted answer cannot make wrong: reads (a write must see its failure).
_SAFE_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_DAY_S = 86_400.0
_BACKOFF_MAX_MS = 250.0
# The tight retry budget (<= 1.1x amplification per hop): retries may add 8 % to the requests,
# plus a reserve of one retry per 20 s so a quiet edge can still retry at all. Not a round 10 %:
# a sliding-window budget enters an outage with the last window's unspent deposits, so over a
# 60 s outage it lets ratio x 7/6 + the reserve through (0.08 x 7/6 + 0.05/s ~ 10 % at 7 calls/s).
BUDGET_RATIO = 0.08
_BUDGET = {"ratio": BUDGET_RATIO, "min_per_s": 0.05, "window_s": 10.0}
# A per-try timeout is never squeezed below this multiple of the healthy p99.9.
_TRY_HEADROOM = 1.2
# A knee is latency rising by half AND by this much: a few ms on a fast service is CPU noise.
_KNEE_MIN_RISE_MS = 20.0


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """The caller's current policy for an edge's route (defaults when it has none)."""

    request_s: float | None = 15.0
    per_try_s: float | None = None
    attempts: int = 1
    budget_ratio: float | None = None  # None: no retry or an unbudgeted one
    outlier: Mapping[str, Any] | None = None
    retry_on: frozenset[str] = frozenset({"connect-failure", "reset", "gateway-error"})

    @property
    def retries_server_errors(self) -> bool:
        """Retries answers of the upstream (5xx / 502-504), not only its connection failures."""
        return self.attempts > 1 and bool(self.retry_on & {"5xx", "gateway-error"})

    @property
    def try_s(self) -> float | None:
        return self.per_try_s or self.request_s


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A proposed change to the caller's document for one edge, with evidence and confidence.

    `target` is "route" (the change merges into the route of `edge.route`) or "upstream"
    (into `upstreams[edge.upstream]`); a None value in `change` removes that key.
    """

    kind: str
    edge: EdgeKey
    target: str
    change: Mapping[str, Any]
    evidence: Mapping[str, Any]
    confidence: float
    summary: str

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")
        if self.target not in ("route", "upstream", "none"):
            raise ValueError(f"unknown target {self.target!r}")

    @property
    def fingerprint(self) -> str:
        """Same edge, kind and change: the same suggestion (evidence may move)."""
        key = [self.edge.caller, self.edge.upstream, self.edge.route, self.kind, self.change]
        blob = json.dumps(key, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A rule that declined to suggest, and why (shown so an operator can see it was checked)."""

    kind: str
    edge: EdgeKey
    reason: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


def _confidence(samples: int, needed: int) -> float:
    return round(min(1.0, math.log1p(samples) / math.log1p(needed * 10)), 2)


def _nice_ms(value_ms: float) -> float:
    """Round up to two significant digits (timeouts read better as 120 ms than 117.3 ms)."""
    if value_ms <= 0:
        return 1.0
    digits = 10 ** max(0, math.floor(math.log10(value_ms)) - 1)
    return float(math.ceil(value_ms / digits) * digits)


def _window(s: EdgeStats) -> dict[str, Any]:
    return {"window_s": s.window_s, "requests": s.requests, "attempts": s.attempts}


def suggest_timeout(
    s: EdgeStats, current: RoutePolicy, *, parent_budget_ms: float | None = None
) -> Suggestion | Refusal | None:
    """Per-try timeout at max(1.2 x p99.9, 2 x p99) of successful tries; never below p99.9 and
    never above what the caller's own caller leaves it (`parent_budget_ms`)."""
    n = len(s.ok_latency_ms)
    if n < MIN_LATENCY_SAMPLES:
        return Refusal("timeout", s.edge, f"only {n} successful tries (need {MIN_LATENCY_SAMPLES})")
    p99, p999 = s.p(0.99), s.p(0.999)
    try_ms = _nice_ms(max(1.2 * p999, 2.0 * p99, 5.0))
    attempts = max(1, current.attempts)
    evidence = {**_window(s), "p50_ms": s.p(0.5), "p99_ms": p99, "p999_ms": p999}
    if parent_budget_ms is not None:
        evidence["parent_budget_ms"] = parent_budget_ms
        fit_ms = (parent_budget_ms - _BACKOFF_MAX_MS * (attempts - 1)) / attempts
        # A try squeezed to the healthy p99.9 itself times out on any latency bump (a slow
        # dependency, a GC pause): every try would fail at once. Keep 20 % headroom or refuse.
        floor_ms = _TRY_HEADROOM * p999
        if fit_ms < floor_ms:
            return Refusal(
                "timeout",
                s.edge,
                f"the caller's own budget leaves {fit_ms:.0f} ms per try for {attempts} "
                f"attempts, below {_TRY_HEADROOM:g}x the healthy p99.9 of {p999:.0f} ms (no "
                "headroom for a latency bump): raise the parent's timeout or cut retries here",
                evidence,
            )
        try_ms = min(try_ms, math.floor(fit_ms))
    total_ms = try_ms * attempts + _BACKOFF_MAX_MS * (attempts - 1)
    change: dict[str, Any] = {"request_s": round(total_ms / 1000, 3)}
    change["per_try_s"] = round(try_ms / 1000, 3) if attempts > 1 else None
    now_s = current.try_s
    if now_s is not None and abs(now_s * 1000 - try_ms) <= 0.2 * try_ms:
        return None  # already about right
    evidence["current_try_s"] = now_s
    return Suggestion(
        "timeout",
        s.edge,
        "route",
        {"timeout": change},
        evidence,
        _confidence(n, MIN_LATENCY_SAMPLES),
        f"{s.edge.label()}: per-try timeout {try_ms:.0f} ms (healthy p99.9 {p999:.0f} ms, "
        f"p99 {p99:.0f} ms) instead of {_fmt_s(now_s)}",
    )


def _fmt_s(value: float | None) -> str:
    return "none" if value is None else f"{value * 1000:.0f} ms"


@dataclass(frozen=True, slots=True)
class _Second:
    """One second of an edge's calls: throughput, in flight (Little's law), latency, failures."""

    rps: int
    concurrency: float
    mean_ms: float
    failed: int


def _seconds(s: EdgeStats) -> list[_Second]:
    """The edge's calls per second of their start, ordered by throughput."""
    per_s: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for c in s.calls:
        per_s[int(c.first.start_s)].append((c.duration_ms, c.failed))
    out = []
    for calls in per_s.values():
        mean = sum(ms for ms, _ in calls) / len(calls)
        failed = sum(f for _, f in calls)
        out.append(_Second(len(calls), len(calls) * mean / 1000, mean, failed))
    return sorted(out, key=lambda x: (x.rps, x.concurrency, x.mean_ms))


def overload(s: EdgeStats, *, min_seconds: int = 20) -> dict[str, float] | None:
    """Evidence that the edge's failures come from overload, else None: over the seconds ordered
    by calls in flight, the busiest third both is slower (>= 1.5x the quietest third's mean
    latency) and fails more (>= 2 % of calls, and >= 2x + 1 pp the quietest third's rate)."""
    seconds = sorted(_seconds(s), key=lambda x: x.concurrency)
    if len(seconds) < min_seconds:
        return None
    third = len(seconds) // 3
    quiet, busy = seconds[:third], seconds[-third:]

    def rate(group: list[_Second]) -> float:
        return sum(x.failed for x in group) / max(1, sum(x.rps for x in group))

    def latency(group: list[_Second]) -> float:
        return sum(x.mean_ms * x.rps for x in group) / max(1, sum(x.rps for x in group))

    quiet_rate, busy_rate = rate(quiet), rate(busy)
    ratio = latency(busy) / max(latency(quiet), 1e-3)
    if ratio < 1.5 or busy_rate < 0.02 or busy_rate < 2 * quiet_rate + 0.01:
        return None
    return {
        "busy_error_rate": round(busy_rate, 4),
        "quiet_error_rate": round(quiet_rate, 4),
        "latency_ratio": round(ratio, 2),
    }


def suggest_budget(s: EdgeStats, current: RoutePolicy) -> Suggestion | None:
    """A tight budget (8 % + 0.05/s) for a retrying route: without one every hop of a chain
    multiplies the load of an overloaded upstream by its attempts; a looser one (the 20 %
    default) is tightened when the edge shows overload."""
    if current.attempts <= 1:
        return None
    busy = overload(s)
    ratio = current.budget_ratio
    if ratio is not None and (ratio <= BUDGET_RATIO or busy is None):
        return None
    evidence: dict[str, Any] = {
        **_window(s),
        "attempts": current.attempts,
        "current_budget_ratio": ratio,
        "worst_case_amplification": current.attempts,
        "retries": s.retries,
    }
    if busy is not None:
        evidence["overload"] = busy
    now = "no budget" if ratio is None else f"a {ratio:.0%} budget"
    return Suggestion(
        "retry_budget",
        s.edge,
        "route",
        {"retry": {"attempts": current.attempts, "budget": dict(_BUDGET)}},
        evidence,
        0.9 if ratio is None else _confidence(s.requests, 100),
        f"{s.edge.label()}: cap retries at {BUDGET_RATIO:.0%} of requests ({now} lets "
        f"{current.attempts} attempts multiply an overloaded upstream's load by "
        f"{current.attempts}x per hop)",
    )


def _retry_refusal(s: EdgeStats, allow_non_idempotent: bool) -> str | None:
    if s.failures < 5:
        return f"only {s.failures} failed tries in the window"
    share = s.transient_failures / s.failures
    if share < 0.7:
        return f"only {share:.0%} of failures are transient (connect errors, 502/503/504)"
    unsafe = sorted(s.methods - IDEMPOTENT)
    if unsafe and not allow_non_idempotent:
        return f"{', '.join(unsafe)} is not idempotent (opt in with allow_non_idempotent)"
    if s.error_rate > 0.5:
        return f"{s.error_rate:.0%} of tries fail: retries would multiply load, not fix it"
    if s.failure_buckets < 3 or s.busiest_failure_bucket > 0.5 * s.failures:
        return "failures are bunched in time (an outage, not transient noise)"
    failing = {e: f for e, f in s.endpoint_failures.items() if f}
    if len(s.endpoint_attempts) > 1 and max(failing.values()) > 0.8 * s.failures:
        worst = max(failing, key=lambda e: failing[e])
        return f"{worst} has most failures: outlier ejection fits better than retries"
    busy = overload(s)
    if busy is not None:
        return (
            f"failures rise with load ({busy['busy_error_rate']:.1%} of calls fail in the busiest "
            f"seconds, {busy['quiet_error_rate']:.1%} in the quietest; latency "
            f"{busy['latency_ratio']:.1f}x): the upstream is overloaded and retries would add "
            "load: limit concurrency instead"
        )
    return None


def suggest_retry(
    s: EdgeStats,
    current: RoutePolicy,
    *,
    allow_non_idempotent: bool = False,
    per_try_s: float | None = None,
) -> Suggestion | Refusal | None:
    """Retries for transient, spread-out failures of idempotent calls, with a tight budget."""
    why = _retry_refusal(s, allow_non_idempotent)
    evidence: dict[str, Any] = {
        **_window(s),
        "failures": s.failures,
        "transient_failures": s.transient_failures,
        "failure_buckets": s.failure_buckets,
        "endpoints_failing": sum(1 for f in s.endpoint_failures.values() if f),
        "methods": sorted(s.methods),
    }
    if why is not None:
        return Refusal("retry", s.edge, why, evidence)
    p = s.transient_failures / s.attempts
    attempts = 2
    while attempts < 3 and p**attempts > max(p / 100, 1e-4):
        attempts += 1
    ratio = round(min(BUDGET_RATIO, max(0.05, 3 * p)), 3)
    evidence.update({"transient_rate": round(p, 5), "expected_residual": round(p**attempts, 6)})
    if current.attempts == attempts and current.budget_ratio == ratio:
        return None
    retry: dict[str, Any] = {
        "attempts": attempts,
        "on": ["connect-failure", "reset", "gateway-error"],
        "budget": {**_BUDGET, "ratio": ratio},
        "backoff_base_ms": 25.0,
        "backoff_max_ms": _BACKOFF_MAX_MS,
    }
    if allow_non_idempotent and s.methods - IDEMPOTENT:
        retry["allow_non_idempotent"] = True
    change: dict[str, Any] = {"retry": retry}
    if per_try_s is not None:
        total = per_try_s * attempts + _BACKOFF_MAX_MS / 1000 * (attempts - 1)
        change["timeout"] = {"per_try_s": per_try_s, "request_s": round(total, 3)}
    return Suggestion(
        "retry",
        s.edge,
        "route",
        change,
        evidence,
        _confidence(s.failures, 20),
        f"{s.edge.label()}: {attempts} attempts with a {ratio:.0%} budget "
        f"({s.transient_failures} transient failures in {s.attempts} tries, spread over "
        f"{s.failure_buckets} buckets)",
    )


def _consecutive_threshold(error_rate: float, rps: float) -> int:
    """Smallest k with (trials per day) x e^k < 1: a healthy endpoint trips < once a day."""
    trials = max(rps * _DAY_S, 1.0)
    if error_rate <= 0:
        return 5
    k = math.ceil(math.log(1 / trials) / math.log(min(error_rate, 0.99)))
    return max(3, min(50, k))


def max_ejection_percent(endpoints: int) -> float:
    """The percent letting the sidecar eject at most max(1, (n - 1) // 2) of `endpoints` (it
    allows max(1, floor(n x percent / 100))): never the last one, never most of them (a fault
    shared by all endpoints must not pile their load on a few)."""
    if endpoints < 2:
        return 0.0
    allowed = max(1, (endpoints - 1) // 2)
    return round(100.0 * (allowed + 0.5) / endpoints, 1)


def suggest_outlier(s: EdgeStats, current: RoutePolicy) -> Suggestion | Refusal | None:
    """Ejection thresholds from the healthy endpoints' error rate, plus latency ejection when
    one endpoint is much slower than its peers."""
    eps = {e: n for e, n in s.endpoint_attempts.items() if n >= 20}
    if not eps:
        return Refusal("outlier", s.edge, "no endpoint has 20 tries in the window")
    if len(s.endpoint_attempts) < 2:
        return Refusal(
            "outlier",
            s.edge,
            "one endpoint: ejecting it leaves nothing to send to (the balancer would panic and "
            "use it anyway); shed load with a concurrency limit instead",
            {**_window(s), "endpoints": len(s.endpoint_attempts)},
        )
    rates = sorted(s.endpoint_failures.get(e, 0) / n for e, n in eps.items())
    healthy = rates[(len(rates) - 1) // 2]  # the median endpoint's error rate
    per_ep_rps = s.attempts / max(len(s.endpoint_attempts), 1) / s.window_s
    k = _consecutive_threshold(healthy, per_ep_rps)
    window_n = max(per_ep_rps * 10.0, 1.0)
    z = 3.7  # a 10 s window below the threshold < once in 8640 windows
    threshold = 1 - healthy - z * math.sqrt(max(healthy * (1 - healthy), 1e-4) / window_n)
    outlier: dict[str, Any] = {
        "consecutive_5xx": k,
        "success_rate": {
            "window_s": 10.0,
            "min_requests": max(5, int(window_n / 2)),
            "threshold": round(min(0.95, max(0.5, threshold)), 3),
        },
        "max_ejection_percent": max_ejection_percent(len(s.endpoint_attempts)),
    }
    evidence: dict[str, Any] = {
        **_window(s),
        "healthy_error_rate": round(healthy, 5),
        "per_endpoint_rps": round(per_ep_rps, 2),
        "endpoint_error_rates": {
            e: round(s.endpoint_failures.get(e, 0) / n, 4) for e, n in eps.items()
        },
    }
    means = {e: s.endpoint_mean_ms[e] for e in eps}
    if len(means) >= 3:
        slow = max(means, key=lambda e: means[e])
        peers = sorted(v for e, v in means.items() if e != slow)
        median = peers[len(peers) // 2]
        if median > 0 and means[slow] > 2 * median:
            factor = round(max(1.5, min(3.0, means[slow] / median / 1.5)), 1)
            outlier["latency"] = {"factor": factor, "min_requests": 20, "min_latency_ms": 10.0}
            evidence.update({"slow_endpoint": slow, "slow_mean_ms": round(means[slow], 1)})
            evidence["peer_median_ms"] = round(median, 1)
    now = current.outlier
    if now is not None and all(now.get(key) == value for key, value in outlier.items()):
        return None
    return Suggestion(
        "outlier",
        s.edge,
        "upstream",
        {"outlier": outlier},
        evidence,
        _confidence(sum(eps.values()), 100),
        f"{s.edge.upstream}: eject after {k} consecutive 5xx or success rate below "
        f"{outlier['success_rate']['threshold']:.0%} (healthy error rate {healthy:.2%})"
        + ("; latency ejection of slow endpoints" if "latency" in outlier else ""),
    )


def suggest_concurrency(s: EdgeStats) -> Suggestion | Refusal | None:
    """A concurrency limit at the throughput-vs-latency knee (Little's law per second) that
    fails fast: at most as many waiting as running, for at most 2x the light-load latency, so
    an overloaded upstream's excess is refused at once (503 `overflow`) instead of queued."""
    points = _seconds(s)
    if len(points) < 20:
        return Refusal("concurrency", s.edge, f"only {len(points)} seconds with traffic (need 20)")
    # Baseline: the median latency of the lightest-loaded third (every second tied with it).
    light = sorted(p.mean_ms for p in points if p.rps <= points[len(points) // 3].rps)
    base_ms = light[len(light) // 2]
    median_rps = points[len(points) // 2].rps
    knee_ms = max(1.5 * base_ms, base_ms + _KNEE_MIN_RISE_MS)
    under = [p.concurrency for p in points if p.mean_ms <= knee_ms]
    over = [p.concurrency for p in points if p.mean_ms > knee_ms and p.rps >= median_rps]
    evidence = {**_window(s), "baseline_latency_ms": round(base_ms, 1), "seconds": len(points)}
    if len(over) < 3 or not under:
        return Refusal("concurrency", s.edge, "latency never rose with load: no knee", evidence)
    knee = max(under)
    limit = max(2, math.ceil(knee * 1.2))
    pending_s = round(min(1.0, max(0.05, 2 * base_ms / 1000)), 3)
    evidence.update({"knee_concurrency": round(knee, 1), "saturated_seconds": len(over)})
    limits = {
        "max_connections": limit,
        "max_pending": limit,
        "max_requests": 2 * limit,
        "pending_timeout_s": pending_s,
    }
    return Suggestion(
        "concurrency",
        s.edge,
        "upstream",
        {"limits": limits},
        evidence,
        _confidence(len(over), 10),
        f"{s.edge.upstream}: at most {limit} concurrent requests, as many waiting for at most "
        f"{pending_s * 1000:.0f} ms, the rest refused at once (latency climbs past {knee:.1f} "
        f"in flight; baseline {base_ms:.0f} ms)",
    )


def suggest_removal(s: EdgeStats, current: RoutePolicy) -> Suggestion | Refusal | None:
    """Remove retries that never help (retries fail again) or never fire."""
    if current.attempts <= 1 or s.requests < 100:
        return None
    evidence = {**_window(s), "retries": s.retries, "retry_successes": s.retry_successes}
    if s.retries >= 20 and s.retry_successes < 0.1 * s.retries:
        share = s.retries / max(s.requests, 1)
        return Suggestion(
            "remove_retry",
            s.edge,
            "route",
            {"retry": None},
            evidence,
            _confidence(s.retries, 20),
            f"{s.edge.label()}: retries hurt: {s.retry_successes} of {s.retries} retries "
            f"succeeded while adding {share:.1%} load",
        )
    if s.retries == 0 and s.failures == 0 and s.requests >= 1000:
        return Suggestion(
            "remove_retry",
            s.edge,
            "route",
            {"retry": None},
            evidence,
            0.3,
            f"{s.edge.label()}: the retry policy never fired in {s.requests} calls",
        )
    return None


def _route_of(doc: Mapping[str, Any], edge: EdgeKey) -> Mapping[str, Any] | None:
    """The caller's route for `edge` (by name, or the tuned route for the implicit default)."""
    names = {edge.route} if edge.route not in ("", "default") else set()
    names.add(f"tuned-{edge.upstream}")
    for route in doc.get("routes", []) or []:
        if isinstance(route, Mapping) and route.get("name") in names:
            return route
    return None


def _alternative_upstream(
    doc: Mapping[str, Any], edge: EdgeKey, route: Mapping[str, Any] | None, avoid: frozenset[str]
) -> str | None:
    """A second upstream of the caller's document serving the same route: another destination
    of the route itself, or the upstream of another route with the same non-root path prefix.
    It must be declared in `upstreams` and not be failing itself (`avoid`)."""
    declared = doc.get("upstreams") or {}
    found: list[str] = []
    if route is not None:
        found += [d.get("upstream", "") for d in route.get("destinations", []) or []]
        prefix = (route.get("match") or {}).get("path_prefix", "/")
        if prefix not in ("", "/"):
            for other in doc.get("routes", []) or []:
                if other is route or (other.get("match") or {}).get("path_prefix") != prefix:
                    continue
                found += [d.get("upstream", "") for d in other.get("destinations", []) or []]
    for name in found:
        if name and name != edge.upstream and name in declared and name not in avoid:
            return str(name)
    return None


def suggest_fallback(
    s: EdgeStats,
    doc: Mapping[str, Any] | None,
    *,
    failing_upstreams: frozenset[str] = frozenset(),
) -> Suggestion | Refusal | None:
    """A route fallback for read calls that end with the proxy refusing to send them upstream
    (overflow, no_healthy_upstream, circuit_open): an `upstream` when the caller's document has a
    second upstream serving the route, else a 503 JSON answer naming the degraded dependency."""
    doc = doc or {}
    final: dict[str, int] = defaultdict(int)
    buckets: set[int] = set()
    for call in s.calls:
        last = call.attempts[-1]
        if last.error_type in FALLBACK_TRIGGERS:
            final[last.error_type] += 1
            buckets.add(int(last.start_s // 10))
    n = sum(final.values())
    evidence: dict[str, Any] = {
        **_window(s),
        "calls_refused_by_proxy": n,
        "by_reason": dict(sorted(final.items())),
        "methods": sorted(s.methods),
    }
    if n < FALLBACK_MIN_CALLS:
        return Refusal(
            "fallback",
            s.edge,
            f"only {n} calls ended with {'/'.join(FALLBACK_TRIGGERS)} (need {FALLBACK_MIN_CALLS})",
            evidence,
        )
    unsafe = sorted(s.methods - _SAFE_READS)
    if unsafe:
        kind = "not idempotent" if set(unsafe) - IDEMPOTENT else "not a read"
        return Refusal(
            "fallback",
            s.edge,
            f"{', '.join(unsafe)} is {kind}: a substitute answer would hide a failed write",
            evidence,
        )
    route = _route_of(doc, s.edge)
    if route is not None and route.get("fallback") is not None:
        return None  # the route has one already
    evidence.update({"failure_buckets": len(buckets), "share": round(n / len(s.calls), 4)})
    alternative = _alternative_upstream(doc, s.edge, route, failing_upstreams)
    fallback: dict[str, Any] = {"on": list(FALLBACK_TRIGGERS)}
    if alternative is not None:
        fallback["upstream"] = alternative
        evidence["fallback_upstream"] = alternative
        answer = f"send them to {alternative}"
    else:
        body = {"error": "dependency_degraded", "dependency": s.edge.upstream}
        if s.edge.route not in ("", "default"):
            body["route"] = s.edge.route
        fallback["response"] = {
            "status": 503,
            "headers": {"content-type": "application/json", "retry-after": "1"},
            "body": json.dumps(body, sort_keys=True, separators=(",", ":")),
        }
        answer = "answer 503 naming the degraded dependency at once"
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(final.items()))
    return Suggestion(
        "fallback",
        s.edge,
        "route",
        {"fallback": fallback},
        evidence,
        _confidence(n, 20),
        f"{s.edge.label()}: {n} of {s.requests} calls could not be sent upstream ({reasons}): "
        f"{answer}",
    )
