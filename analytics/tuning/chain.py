"""Whole-call-chain checks: timeouts that do not nest, retry amplification over paths, and
retries at one layer.

A child's total timeout (all tries and backoff) must fit in its parent's per-try timeout;
worst-case amplification is the product of attempts along a path, the budgeted bound the
product of (1 + budget ratio). Server errors are retried at one layer only, the hop nearest the
failure: a caller whose upstream retries its own upstream's errors retries only failures of its
own hop (connect failure, reset), or every error deep in the chain is retried once per layer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from analytics.tuning.rules import Refusal, RoutePolicy, Suggestion
from analytics.tuning.stats import EdgeKey

__all__ = [
    "HOP_FAILURES",
    "Amplification",
    "amplification",
    "chain_findings",
    "parent_budgets_ms",
    "retry_layers",
]

# What a caller still retries when the layer below retries server errors: its own hop failing.
HOP_FAILURES = ("connect-failure", "reset")
_SERVER_ERRORS = frozenset({"5xx", "gateway-error"})

MAX_BUDGETED_AMPLIFICATION = 1.5
_MAX_DEPTH = 12


@dataclass(frozen=True, slots=True)
class Amplification:
    """Retry amplification along one call path (services, root first)."""

    path: tuple[str, ...]
    worst_case: float
    budgeted: float
    unbudgeted_hops: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        return bool(self.unbudgeted_hops) or self.budgeted > MAX_BUDGETED_AMPLIFICATION


def _children(policies: Mapping[EdgeKey, RoutePolicy]) -> dict[str, list[EdgeKey]]:
    out: dict[str, list[EdgeKey]] = defaultdict(list)
    for edge in sorted(policies, key=lambda e: (e.caller, e.upstream, e.route)):
        out[edge.caller].append(edge)
    return out


def amplification(policies: Mapping[EdgeKey, RoutePolicy]) -> list[Amplification]:
    """Every root-to-leaf path of the observed call graph with its amplification."""
    children = _children(policies)
    callees = {e.upstream for e in policies}
    roots = sorted(set(children) - callees) or sorted(children)
    out: list[Amplification] = []

    def walk(
        service: str,
        path: tuple[str, ...],
        worst: float,
        budgeted: float,
        unbudgeted: tuple[str, ...],
    ) -> None:
        edges = children.get(service, [])
        if not edges or len(path) > _MAX_DEPTH:
            if len(path) > 1:
                out.append(Amplification(path, worst, budgeted, unbudgeted))
            return
        for edge in edges:
            if edge.upstream in path:
                continue  # a cycle: the path ends where it would repeat
            pol = policies[edge]
            hop_budget = (
                float(pol.attempts)
                if pol.budget_ratio is None
                else min(float(pol.attempts), 1 + pol.budget_ratio)
            )
            flag = unbudgeted + (
                (f"{edge.caller}->{edge.upstream}",)
                if pol.attempts > 1 and pol.budget_ratio is None
                else ()
            )
            walk(
                edge.upstream,
                (*path, edge.upstream),
                worst * pol.attempts,
                budgeted * hop_budget,
                flag,
            )

    for root in roots:
        walk(root, (root,), 1.0, 1.0, ())
    return out


def parent_budgets_ms(policies: Mapping[EdgeKey, RoutePolicy]) -> dict[str, float]:
    """Per service, the smallest per-try timeout any caller gives it (ms); absent: unbounded."""
    out: dict[str, float] = {}
    for edge, pol in policies.items():
        if pol.try_s is not None:
            ms = pol.try_s * 1000
            out[edge.upstream] = min(out.get(edge.upstream, ms), ms)
    return out


def chain_findings(policies: Mapping[EdgeKey, RoutePolicy]) -> list[Suggestion]:
    """Informational suggestions (nothing to accept): non-nesting timeouts, amplification."""
    found: list[Suggestion] = []
    budgets = parent_budgets_ms(policies)
    for edge, pol in sorted(policies.items(), key=lambda kv: kv[0].label()):
        parent = budgets.get(edge.caller)
        if parent is None or pol.request_s is None or pol.request_s * 1000 <= parent:
            continue
        found.append(
            Suggestion(
                "chain_timeout",
                edge,
                "none",
                {},
                {"child_total_ms": pol.request_s * 1000, "parent_try_ms": parent},
                1.0,
                f"{edge.label()}: total timeout {pol.request_s * 1000:.0f} ms (all tries) does "
                f"not fit in the {parent:.0f} ms its caller gives {edge.caller}",
            )
        )
    for amp in amplification(policies):
        if not amp.flagged:
            continue
        first = EdgeKey(amp.path[0], amp.path[1], "")
        found.append(
            Suggestion(
                "amplification",
                first,
                "none",
                {"path": list(amp.path)},
                {
                    "worst_case": amp.worst_case,
                    "budgeted": round(amp.budgeted, 3),
                    "unbudgeted_hops": list(amp.unbudgeted_hops),
                },
                1.0,
                f"{' -> '.join(amp.path)}: retries can multiply leaf load {amp.worst_case:g}x"
                + (
                    f" (unbudgeted: {', '.join(amp.unbudgeted_hops)})"
                    if amp.unbudgeted_hops
                    else f" (budgets bound it at {amp.budgeted:.2f}x)"
                ),
            )
        )
    return found


def retry_layers(
    policies: Mapping[EdgeKey, RoutePolicy],
    failures: Mapping[EdgeKey, tuple[int, int]],
) -> list[Suggestion | Refusal]:
    """Retry server errors at one layer: for an edge retrying 5xx whose upstream itself retries
    5xx towards its own upstreams, keep only connection-level retries here.

    `failures[edge]` = (failed calls, failed calls with no failed call of the upstream below in
    the same trace); when most of an edge's failures are its upstream's own, the upstream is a
    failure source itself and its callers keep their retries (a refusal says so).
    """
    out: list[Suggestion | Refusal] = []
    for edge, pol in sorted(policies.items(), key=lambda kv: kv[0].label()):
        if not pol.retries_server_errors:
            continue
        below = sorted(
            e.label()
            for e, p in policies.items()
            if e.caller == edge.upstream and e.upstream != edge.caller and p.retries_server_errors
        )
        if not below:
            continue  # the hop nearest the failure: its retries stay
        failed, own = failures.get(edge, (0, 0))
        evidence = {
            "retry_on": sorted(pol.retry_on),
            "attempts": pol.attempts,
            "retrying_below": below,
            "failed_calls": failed,
            "failed_on_its_own": own,
        }
        if failed >= 5 and own >= 0.5 * failed:
            out.append(
                Refusal(
                    "retry_layer",
                    edge,
                    f"{own} of {failed} failed calls had no failed call below {edge.upstream}: "
                    "it fails on its own, so retrying its errors here helps",
                    evidence,
                )
            )
            continue
        on = sorted(pol.retry_on - _SERVER_ERRORS) or list(HOP_FAILURES)
        out.append(
            Suggestion(
                "retry_layer",
                edge,
                "route",
                {"retry": {"attempts": pol.attempts, "on": on}},
                evidence,
                0.8,
                f"{edge.label()}: retry only {', '.join(on)} here; {edge.upstream}'s own calls "
                f"already retry server errors ({', '.join(below)}), so retrying its 5xx again "
                f"multiplies every deep failure by {pol.attempts}x per layer",
            )
        )
    return out
