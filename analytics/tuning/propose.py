"""Run every rule over every edge of a window (CPU-bound; the service calls it in a thread)."""

from __future__ import annotations

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

__all__ = ["Proposals", "at_the_bottleneck", "propose"]


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
    for result in at_the_bottleneck(limits):
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
    kneeing: dict[str, list[EdgeKey]] = {}
    for edge, result in limits.items():
        if isinstance(result, Suggestion):
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
