"""Per-edge statistics of sidecar CLIENT spans (one span per attempt): the input of every rule.

Attempts of one logical call share trace, parent span, caller, upstream and route; a call is
good when its last attempt got a non-5xx answer without a proxy error.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "IDEMPOTENT",
    "TRANSIENT",
    "Attempt",
    "Call",
    "EdgeKey",
    "EdgeStats",
    "edge_stats",
    "group_calls",
    "quantile",
]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Failures a retry can fix: the request never reached the app, or a gateway said "try again".
TRANSIENT = frozenset({"connect_failure", "upstream_reset", "502", "503", "504"})


@dataclass(frozen=True, slots=True)
class EdgeKey:
    """A caller's calls to one upstream over one route."""

    caller: str
    upstream: str
    route: str

    def label(self) -> str:
        return f"{self.caller}->{self.upstream}" + (f" ({self.route})" if self.route else "")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One sidecar CLIENT span: one try of one call."""

    edge: EdgeKey
    trace_id: str
    parent_id: str
    start_s: float
    duration_ms: float
    method: str
    endpoint: str
    attempt: int
    status: int
    error_type: str

    @property
    def failed(self) -> bool:
        return self.status >= 500 or self.status == 0 or self.error_type in TRANSIENT

    @property
    def transient(self) -> bool:
        return self.failed and (self.error_type in TRANSIENT or self.status in (502, 503, 504))


@dataclass(frozen=True, slots=True)
class Call:
    """The attempts of one logical call, in order."""

    attempts: tuple[Attempt, ...]

    @property
    def first(self) -> Attempt:
        return self.attempts[0]

    @property
    def failed(self) -> bool:
        return self.attempts[-1].failed

    @property
    def duration_ms(self) -> float:
        end = max(a.start_s * 1000 + a.duration_ms for a in self.attempts)
        return end - self.first.start_s * 1000


def group_calls(attempts: Iterable[Attempt]) -> list[Call]:
    """Attempts grouped into calls (by trace, parent span and edge), ordered by start."""
    groups: dict[tuple[EdgeKey, str, str], list[Attempt]] = defaultdict(list)
    for a in attempts:
        groups[(a.edge, a.trace_id, a.parent_id)].append(a)
    calls = [Call(tuple(sorted(g, key=lambda a: (a.attempt, a.start_s)))) for g in groups.values()]
    calls.sort(key=lambda c: c.first.start_s)
    return calls


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """What the rules know about one edge in one window."""

    edge: EdgeKey
    window_s: float
    calls: tuple[Call, ...]
    attempts: int
    retries: int
    retry_successes: int
    failures: int
    transient_failures: int
    methods: frozenset[str]
    ok_latency_ms: tuple[float, ...]  # sorted durations of successful attempts
    endpoint_attempts: dict[str, int] = field(default_factory=dict)
    endpoint_failures: dict[str, int] = field(default_factory=dict)
    endpoint_mean_ms: dict[str, float] = field(default_factory=dict)
    failure_buckets: int = 0  # distinct spread buckets (10 s by default) holding a failure
    busiest_failure_bucket: int = 0  # failures in the worst such bucket

    @property
    def requests(self) -> int:
        return len(self.calls)

    @property
    def error_rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0

    @property
    def call_error_rate(self) -> float:
        return sum(c.failed for c in self.calls) / len(self.calls) if self.calls else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.window_s if self.window_s > 0 else 0.0

    def p(self, q: float) -> float:
        return quantile(self.ok_latency_ms, q)


def edge_stats(
    attempts: Sequence[Attempt], window_s: float, *, bucket_s: float = 10.0
) -> dict[EdgeKey, EdgeStats]:
    """Statistics per edge of the attempts of a window `window_s` long; failures are counted in
    `bucket_s` buckets to tell noise spread in time from an outage."""
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be > 0, got {bucket_s}")
    by_edge: dict[EdgeKey, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_edge[a.edge].append(a)
    out: dict[EdgeKey, EdgeStats] = {}
    for key, group in by_edge.items():
        out[key] = _one_edge(key, group, window_s, bucket_s)
    return out


def _one_edge(key: EdgeKey, group: list[Attempt], window_s: float, bucket_s: float) -> EdgeStats:
    ep_n: dict[str, int] = defaultdict(int)
    ep_fail: dict[str, int] = defaultdict(int)
    ep_sum: dict[str, float] = defaultdict(float)
    buckets: dict[int, int] = defaultdict(int)
    ok: list[float] = []
    failures = transient = 0
    for a in group:
        ep_n[a.endpoint] += 1
        ep_sum[a.endpoint] += a.duration_ms
        if a.failed:
            failures += 1
            transient += a.transient
            ep_fail[a.endpoint] += 1
            buckets[int(a.start_s // bucket_s)] += 1
        else:
            ok.append(a.duration_ms)
    calls = group_calls(group)
    retried = [c for c in calls if len(c.attempts) > 1]
    ok.sort()
    return EdgeStats(
        edge=key,
        window_s=window_s,
        calls=tuple(calls),
        attempts=len(group),
        retries=sum(len(c.attempts) - 1 for c in calls),
        retry_successes=sum(not c.failed for c in retried),
        failures=failures,
        transient_failures=transient,
        methods=frozenset(a.method for a in group),
        ok_latency_ms=tuple(ok),
        endpoint_attempts=dict(ep_n),
        endpoint_failures=dict(ep_fail),
        endpoint_mean_ms={e: ep_sum[e] / n for e, n in ep_n.items()},
        failure_buckets=len(buckets),
        busiest_failure_bucket=max(buckets.values(), default=0),
    )
