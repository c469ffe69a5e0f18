"""Run every rule over every edge of a window (CPU-bound; the service calls it in a thread)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from analytics.tuning.chain import chain_findings, parent_budgets_ms, retry_layers
from analytics.tuning.lifecycle import route_policy
from analytics.tuning.rules import (
    FALLBACK_TRIGGERS,
    Refusal,
    RoutePolicy,
    Suggestion,
    suggest_budget,
    suggest_concurrency,
    suggest_fallback,
    suggest_outlier,
    suggest_removal,
    suggest_retry,
    suggest_timeout,
)
from analytics.tuning.stats import Attempt, EdgeKey, EdgeStats, edge_stats

__all__ = ["MIN_CALLER_SHARE", "Proposals", "at_the_bottleneck", "propose", "share_the_callee"]

# A caller sending less than this share of a saturated callee's calls cannot fill it on its own:
# it is left without a limit (its floor of 2 would exceed its share of the callee anyway).
MIN_CALLER_SHARE = 0.05


@dataclass(frozen=True, slots=True)
class Proposals:
    suggestions: tuple[Suggestion, ...]
    refusals: tuple[Refusal, ...]


def propose(
    attempts: Sequence[Attempt],
    window_s: float,
    documents: Mapping[str, Mapping[str, Any]],
    *,
    non_idempotent_opt_in: Collection[str] = (),
    bucket_s: float = 10.0,
) -> Proposals:
    """Suggestions and refusals for the edges of `attempts` given each caller's document.

    `non_idempotent_opt_in` holds `caller->upstream` edges whose owners allow retrying any
    method.
    """
    stats = edge_stats(attempts, window_s, bucket_s=bucket_s)
    policies: dict[EdgeKey, RoutePolicy] = {
        edge: route_policy(documents.get(edge.caller), edge) for edge in stats
    }
    budgets = parent_budgets_ms(policies)
    # upstreams each caller saw refusing requests: never offered as a fallback upstream
    failing: dict[str, set[str]] = {}
    for edge, s in stats.items():
        if any(c.attempts[-1].error_type in FALLBACK_TRIGGERS for c in s.calls):
            failing.setdefault(edge.caller, set()).add(edge.upstream)
    found: list[Suggestion] = []
    refused: list[Refusal] = []
    limits: dict[EdgeKey, Suggestion | Refusal | None] = {}

    def keep(result: Suggestion | Refusal | None) -> Suggestion | None:
        if isinstance(result, Refusal):
            refused.append(result)
            return None
        if result is not None:
            found.append(result)
        return result

    for edge in sorted(stats, key=lambda e: (e.caller, e.upstream, e.route)):
        s, current = stats[edge], policies[edge]
        timeout = keep(suggest_timeout(s, current, parent_budget_ms=budgets.get(edge.caller)))
        per_try = None
        if timeout is not None:
            per_try = (
                timeout.change["timeout"].get("per_try_s") or timeout.change["timeout"]["request_s"]
            )
        opt_in = f"{edge.caller}->{edge.upstream}" in non_idempotent_opt_in
        retry = keep(suggest_retry(s, current, allow_non_idempotent=opt_in, per_try_s=per_try))
        if retry is not None and timeout is not None and "timeout" in retry.change:
            found.remove(timeout)  # the retry suggestion carries the matching timeouts
        if retry is None and keep(suggest_removal(s, current)) is None:
            keep(suggest_budget(s, current))
        keep(suggest_outlier(s, current))
        limits[edge] = suggest_concurrency(s)
        avoid = frozenset(failing.get(edge.caller, ()))
        keep(suggest_fallback(s, documents.get(edge.caller), failing_upstreams=avoid))
    checked = dict(zip(limits, at_the_bottleneck(limits), strict=True))
    for result in share_the_callee(stats, checked):
        keep(result)
    for layered in retry_layers(policies, _failures(stats)):
        keep(layered)
    found.extend(chain_findings(policies))
    return Proposals(tuple(found), tuple(refused))


def _failures(stats: Mapping[EdgeKey, EdgeStats]) -> dict[EdgeKey, tuple[int, int]]:
    """Per edge: (failed calls, failed calls whose trace has no failed call by the upstream)."""
    failed_traces: dict[str, set[str]] = {}
    for edge, s in stats.items():
        failed_traces.setdefault(edge.caller, set()).update(
            c.first.trace_id for c in s.calls if c.failed
        )
    out: dict[EdgeKey, tuple[int, int]] = {}
    for edge, s in stats.items():
        below = failed_traces.get(edge.upstream, set())
        failed = [c for c in s.calls if c.failed]
        out[edge] = (len(failed), sum(c.first.trace_id not in below for c in failed))
    return out


def at_the_bottleneck(
    limits: Mapping[EdgeKey, Suggestion | Refusal | None],
) -> list[Suggestion | Refusal | None]:
    """Concurrency limits only where latency rises on its own: a caller whose upstream's own
    calls knee too only inherits that latency, and a limit there would refuse calls the
    upstream could still serve while the real bottleneck stays unprotected."""
    # A callee is saturated when any of its callers saw a knee (the capacity is the callee's);
    # its callers' callers only inherit that latency.
    saturated = {e.upstream for e, r in limits.items() if isinstance(r, Suggestion)}
    kneeing: dict[str, list[EdgeKey]] = {}
    for edge in limits:
        if edge.upstream in saturated and edge.upstream != edge.caller:
            kneeing.setdefault(edge.caller, []).append(edge)
    out: list[Suggestion | Refusal | None] = []
    for edge, result in limits.items():
        below = kneeing.get(edge.upstream, [])
        if isinstance(result, Suggestion) and below and edge.upstream != edge.caller:
            names = ", ".join(sorted(e.label() for e in below))
            result = Refusal(
                "concurrency",
                edge,
                f"latency rises downstream ({names}): the limit belongs there; one here would "
                f"refuse calls {edge.upstream} could still serve",
                {**result.evidence, "downstream_knees": sorted(e.label() for e in below)},
            )
        out.append(result)
    return out


def share_the_callee(
    stats: Mapping[EdgeKey, EdgeStats],
    limits: Mapping[EdgeKey, Suggestion | Refusal | None],
) -> list[Suggestion | Refusal | None]:
    """Concurrency limits for every caller of a saturated callee, not only the one that saw it.

    The capacity is the callee's: a knee seen from one caller (`limits`, already checked by
    `at_the_bottleneck`) means the callee saturates for all of them, and a caller left without
    a limit fills it alone. The callee's knee concurrency is the kneeing caller's in flight at
    its knee divided by that caller's share of the callee's calls (they wait in the same queue,
    so by Little's law their in-flight counts are in proportion to their rates; of several
    kneeing callers the busiest one is used). It is split by each caller's share of the
    callee's calls (L = max(2, 1.2 x share x knee), one suggestion per caller, on its busiest
    route to the callee); a caller below `MIN_CALLER_SHARE` is refused with the reason.
    Callees with a single caller keep that caller's own result.
    """
    by_callee: dict[str, list[EdgeKey]] = {}
    for edge in limits:
        by_callee.setdefault(edge.upstream, []).append(edge)
    out: dict[EdgeKey, Suggestion | Refusal | None] = dict(limits)
    for callee, edges in by_callee.items():
        knees = [(e, r) for e in edges if isinstance(r := limits[e], Suggestion)]
        callers = {e.caller for e in edges}
        if not knees or len(callers) < 2:
            continue
        calls: dict[str, int] = {}
        busiest: dict[str, EdgeKey] = {}
        for e in edges:
            n = stats[e].requests
            calls[e.caller] = calls.get(e.caller, 0) + n
            if e.caller not in busiest or n > stats[busiest[e.caller]].requests:
                busiest[e.caller] = e
        total = sum(calls.values())
        if total == 0:
            continue
        source_edge, source = max(knees, key=lambda k: (calls[k[0].caller], k[0].route))
        source_share = calls[source_edge.caller] / total
        knee = float(source.evidence["knee_concurrency"]) / source_share
        pending_s = source.change["limits"]["pending_timeout_s"]
        for e in edges:
            out[e] = None
        for caller in sorted(callers):
            edge, share = busiest[caller], calls[caller] / total
            evidence: dict[str, Any] = {
                "window_s": stats[edge].window_s,
                "requests": calls[caller],
                "callee_requests": total,
                "traffic_share": round(share, 3),
                "knee_from": source_edge.label(),
                "source_knee_concurrency": source.evidence["knee_concurrency"],
                "callee_knee_concurrency": round(knee, 2),
            }
            if share < MIN_CALLER_SHARE:
                out[edge] = Refusal(
                    "concurrency",
                    edge,
                    f"{callee} saturates (knee seen by {source_edge.label()}) but {caller} sends "
                    f"only {share:.1%} of its calls (< {MIN_CALLER_SHARE:.0%}): too little to "
                    "fill it, left without a limit",
                    evidence,
                )
                continue
            part = knee * share
            limit = max(2, math.ceil(part * 1.2))
            evidence["knee_share"] = round(part, 2)
            change = {
                "limits": {
                    "max_connections": limit,
                    "max_pending": limit,
                    "max_requests": 2 * limit,
                    "pending_timeout_s": pending_s,
                }
            }
            out[edge] = Suggestion(
                "concurrency",
                edge,
                "upstream",
                change,
                evidence,
                source.confidence,
                f"{callee}: at most {limit} concurrent requests from {caller}, as many waiting "
                f"for at most {pending_s * 1000:.0f} ms, the rest refused at once ({share:.0%} "
                f"of {callee}'s calls, of a knee at {knee:.1f} in flight seen by "
                f"{source_edge.label()})",
            )
    return [out[e] for e in limits]
