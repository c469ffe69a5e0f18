"""Counterfactual replay: what a suggestion would have done on the recorded calls of its window.

Calls are replayed from their first try (the recorded retries came from the old policy). A retry's
chance of success is the success rate of other calls' first tries within 5 s of the failure, so
an outage that lasted the whole window rescues nothing.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from analytics.tuning.rules import Suggestion
from analytics.tuning.stats import IDEMPOTENT, Call

__all__ = ["ReplayResult", "replay"]

_NEAR_S = 5.0


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The replay's figures (expected values where chance is involved)."""

    requests: int
    failures: int
    would_time_out: int = 0
    retried: int = 0
    rescued: float = 0.0
    budget_denied: int = 0
    extra_attempts: float = 0.0
    would_eject: int = 0
    would_limit: float = 0.0
    lost_successes: int = 0

    @property
    def extra_load(self) -> float:
        return self.extra_attempts / self.requests if self.requests else 0.0

    def text(self) -> str:
        parts = []
        if self.would_time_out:
            parts.append(f"{self.would_time_out} requests would have timed out")
        if self.retried:
            parts.append(
                f"{self.rescued:.0f} of {self.failures} failures would have been retried with "
                f"success"
            )
        if self.budget_denied:
            parts.append(f"{self.budget_denied} retries held back by the budget")
        if self.retried or self.extra_attempts:
            parts.append(f"{self.extra_load:.1%} extra load")
        if self.would_eject:
            parts.append(f"{self.would_eject} ejections")
        if self.would_limit:
            parts.append(f"{self.would_limit:.0f} requests refused by the limit")
        if self.lost_successes:
            parts.append(f"{self.lost_successes} calls rescued by retries would fail")
        return ", ".join(parts) or f"no effect on the {self.requests} recorded requests"

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "extra_load": round(self.extra_load, 5), "text": self.text()}


def replay(suggestion: Suggestion, calls: Sequence[Call]) -> ReplayResult:
    """Replay `calls` (one edge, ordered by start) under `suggestion`'s change."""
    failures = sum(c.first.failed for c in calls)
    out = ReplayResult(requests=len(calls), failures=failures)
    change = suggestion.change
    if change.get("timeout"):
        out = _timeouts(out, change["timeout"], calls)
    if "retry" in change:
        out = _retries(out, change["retry"], calls)
    if "outlier" in change:
        out = _ejections(out, change["outlier"], calls)
    if "limits" in change:
        out = _limits(out, change["limits"], calls)
    return out


def _timeouts(out: ReplayResult, timeout: Mapping[str, Any], calls: Sequence[Call]) -> ReplayResult:
    limit_s = timeout.get("per_try_s") or timeout.get("request_s")
    if not limit_s:
        return out
    cut = sum(1 for c in calls if c.first.duration_ms > limit_s * 1000)
    return _replace(out, would_time_out=cut)


def _local_failure_rates(calls: Sequence[Call]) -> list[float]:
    """For each call, the failure rate of the other calls' first tries within 5 s."""
    starts = [c.first.start_s for c in calls]
    fails = [0]
    for c in calls:
        fails.append(fails[-1] + c.first.failed)
    rates = []
    for c in calls:
        lo = bisect.bisect_left(starts, c.first.start_s - _NEAR_S)
        hi = bisect.bisect_right(starts, c.first.start_s + _NEAR_S)
        others = hi - lo - 1
        failed = fails[hi] - fails[lo] - c.first.failed
        rates.append(failed / others if others > 0 else 1.0)
    return rates


def _retries(
    out: ReplayResult, retry: Mapping[str, Any] | None, calls: Sequence[Call]
) -> ReplayResult:
    if retry is None:  # removal: the successes earlier retries brought are lost
        lost = sum(1 for c in calls if len(c.attempts) > 1 and not c.failed)
        saved = sum(len(c.attempts) - 1 for c in calls)
        return _replace(out, lost_successes=lost, extra_attempts=-float(saved))
    attempts = int(retry.get("attempts", 2))
    any_method = bool(retry.get("allow_non_idempotent", False))
    budget = retry.get("budget")
    rates = _local_failure_rates(calls)
    per_window: dict[int, int] = defaultdict(int)
    for c in calls:
        per_window[int(c.first.start_s // 10)] += 1
    used: dict[int, int] = defaultdict(int)
    retried = denied = 0
    rescued = extra = 0.0
    for c, q in zip(calls, rates, strict=True):
        first = c.first
        if not first.transient or (first.method not in IDEMPOTENT and not any_method):
            continue
        window = int(first.start_s // 10)
        if budget is not None:
            allowed = budget["ratio"] * per_window[window] + budget["min_per_s"] * 10
            if used[window] + 1 > math.floor(allowed):
                denied += 1
                continue
        used[window] += 1
        retried += 1
        rescued += 1 - q ** (attempts - 1)
        extra += sum(q**i for i in range(attempts - 1))
    return _replace(
        out, retried=retried, rescued=round(rescued, 2), budget_denied=denied, extra_attempts=extra
    )


def _ejections(
    out: ReplayResult, outlier: Mapping[str, Any], calls: Sequence[Call]
) -> ReplayResult:
    k = outlier.get("consecutive_5xx")
    if not k:
        return out
    streak: dict[str, int] = defaultdict(int)
    ejections = 0
    for c in calls:
        for a in c.attempts:
            if a.failed:
                streak[a.endpoint] += 1
                if streak[a.endpoint] >= k:
                    ejections += 1
                    streak[a.endpoint] = 0
            else:
                streak[a.endpoint] = 0
    return _replace(out, would_eject=ejections)


def _limits(out: ReplayResult, limits: Mapping[str, Any], calls: Sequence[Call]) -> ReplayResult:
    cap = limits.get("max_requests") or limits.get("max_connections")
    if not cap:
        return out
    per_s: dict[int, list[float]] = defaultdict(list)
    for c in calls:
        per_s[int(c.first.start_s)].append(c.duration_ms)
    refused = 0.0
    for durations in per_s.values():
        in_flight = sum(durations) / 1000  # Little's law over one second
        if in_flight > cap:
            refused += len(durations) * (1 - cap / in_flight)
    return _replace(out, would_limit=round(refused, 1))


def _replace(out: ReplayResult, **changes: Any) -> ReplayResult:
    return ReplayResult(**{**asdict(out), **changes})
