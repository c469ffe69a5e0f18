"""Run every rule over every edge of a window (CPU-bound; the service calls it in a thread)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from analytics.tuning.chain import chain_findings, parent_budgets_ms
from analytics.tuning.lifecycle import route_policy
from analytics.tuning.rules import (
    FALLBACK_TRIGGERS,
    Refusal,
    RoutePolicy,
    Suggestion,
    suggest_concurrency,
    suggest_fallback,
    suggest_outlier,
    suggest_removal,
    suggest_retry,
    suggest_timeout,
)
from analytics.tuning.stats import Attempt, EdgeKey, edge_stats

__all__ = ["Proposals", "propose"]


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
        if retry is None:
            keep(suggest_removal(s, current))
        keep(suggest_outlier(s, current))
        keep(suggest_concurrency(s))
        avoid = frozenset(failing.get(edge.caller, ()))
        keep(suggest_fallback(s, documents.get(edge.caller), failing_upstreams=avoid))
    found.extend(chain_findings(policies))
    return Proposals(tuple(found), tuple(refused))
