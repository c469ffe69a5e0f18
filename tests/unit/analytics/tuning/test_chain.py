"""Call-chain checks: timeouts that do not nest, retry amplification as a product over hops,
server errors retried at one layer."""

from __future__ import annotations

from analytics.controlplane.validation import validate_policy
from analytics.tuning.chain import (
    HOP_FAILURES,
    amplification,
    chain_findings,
    parent_budgets_ms,
    retry_layers,
)
from analytics.tuning.lifecycle import apply_change
from analytics.tuning.propose import propose
from analytics.tuning.rules import Refusal, RoutePolicy, Suggestion
from analytics.tuning.stats import Attempt, EdgeKey
from tests.unit.analytics.tuning.traffic import T0

WEB_API = EdgeKey("web", "api", "r1")
API_DB = EdgeKey("api", "db", "r2")


def test_amplification_is_the_product_of_attempts_along_the_path() -> None:
    policies = {WEB_API: RoutePolicy(1.0, None, 3, None), API_DB: RoutePolicy(1.0, None, 3, None)}
    (path,) = amplification(policies)
    assert path.path == ("web", "api", "db")
    assert path.worst_case == 9
    assert path.flagged and path.unbudgeted_hops == ("web->api", "api->db")


def test_budgets_bound_amplification() -> None:
    policies = {WEB_API: RoutePolicy(1.0, None, 3, 0.05), API_DB: RoutePolicy(1.0, None, 2, 0.05)}
    (path,) = amplification(policies)
    assert path.worst_case == 6
    assert round(path.budgeted, 4) == 1.1025
    assert not path.flagged


def test_cycles_end_the_path() -> None:
    back = EdgeKey("db", "web", "r3")
    policies = {WEB_API: RoutePolicy(), API_DB: RoutePolicy(), back: RoutePolicy()}
    assert all(len(set(p.path)) == len(p.path) for p in amplification(policies))


def test_a_child_total_longer_than_its_parents_try_is_a_finding() -> None:
    policies = {WEB_API: RoutePolicy(1.0, 0.5, 2, 0.2), API_DB: RoutePolicy(2.0, 1.0, 2, 0.2)}
    assert parent_budgets_ms(policies) == {"api": 500.0, "db": 1000.0}
    found = chain_findings(policies)
    kinds = {(f.kind, f.edge.caller) for f in found}
    assert ("chain_timeout", "api") in kinds
    chain = next(f for f in found if f.kind == "chain_timeout")
    assert chain.evidence == {"child_total_ms": 2000.0, "parent_try_ms": 500.0}
    assert chain.target == "none"


def test_nesting_timeouts_are_not_flagged() -> None:
    policies = {WEB_API: RoutePolicy(2.0, 1.0, 2, 0.1), API_DB: RoutePolicy(0.4, 0.2, 2, 0.1)}
    assert [f for f in chain_findings(policies) if f.kind == "chain_timeout"] == []


FIVE_XX = frozenset({"5xx", "connect-failure", "reset"})


def test_server_errors_are_retried_at_one_layer_the_one_nearest_the_failure() -> None:
    policies = {
        WEB_API: RoutePolicy(3.0, 1.0, 3, None, retry_on=FIVE_XX),
        API_DB: RoutePolicy(3.0, 1.0, 3, None, retry_on=FIVE_XX),
    }
    (found,) = retry_layers(policies, {})
    assert isinstance(found, Suggestion) and found.kind == "retry_layer"
    assert found.edge == WEB_API  # the db hop keeps its retries
    assert found.change == {"retry": {"attempts": 3, "on": ["connect-failure", "reset"]}}
    assert found.evidence["retrying_below"] == [API_DB.label()]
    doc = {
        "service": "web",
        "upstreams": {"api": {}},
        "routes": [
            {
                "name": WEB_API.route,
                "match": {"hosts": ["api"]},
                "destinations": [{"upstream": "api"}],
                "retry": {"attempts": 3, "on": ["5xx", "connect-failure", "reset"], "budget": None},
            }
        ],
    }
    new = apply_change(doc, "web", WEB_API, "route", found.change, observe=False)
    validate_policy("web", new)
    assert new["routes"][0]["retry"]["on"] == ["connect-failure", "reset"]
    assert new["routes"][0]["retry"]["budget"] is None  # other retry settings are kept
    # narrowed: nothing more to suggest
    narrowed = {
        **policies,
        WEB_API: RoutePolicy(3.0, 1.0, 3, None, retry_on=frozenset(HOP_FAILURES)),
    }
    assert retry_layers(narrowed, {}) == []


def test_a_caller_keeps_retrying_an_upstream_that_fails_on_its_own() -> None:
    policies = {
        WEB_API: RoutePolicy(3.0, 1.0, 3, None, retry_on=FIVE_XX),
        API_DB: RoutePolicy(3.0, 1.0, 2, 0.1),  # gateway-error by default
    }
    (refused,) = retry_layers(policies, {WEB_API: (10, 8)})
    assert isinstance(refused, Refusal) and "fails on its own" in refused.reason
    (found,) = retry_layers(policies, {WEB_API: (10, 1)})  # failures come from below
    assert isinstance(found, Suggestion)


def test_propose_tells_failures_from_below_by_their_traces() -> None:
    """web -> api -> db, both retrying 5xx; api's failures are db's (same traces) -> narrow."""
    docs = {
        svc: {
            "service": svc,
            "upstreams": {up: {}},
            "routes": [
                {
                    "name": f"static-{up}",
                    "match": {"hosts": [up]},
                    "destinations": [{"upstream": up}],
                    "retry": {"attempts": 2, "on": ["5xx"], "budget": None},
                }
            ],
        }
        for svc, up in (("web", "api"), ("api", "db"))
    }
    attempts = []
    for n in range(200):
        failed = n % 10 == 0
        for caller, up in (("web", "api"), ("api", "db")):
            status = 500 if failed else 200
            edge = EdgeKey(caller, up, f"static-{up}")
            start = T0 + n * 0.5
            trace, parent = f"{n:032x}", f"{caller}{n:012x}"
            attempts.append(
                Attempt(edge, trace, parent, start, 20.0, "GET", f"{up}:80", 1, status, "")
            )
    found = propose(attempts, 100.0, docs)
    layered = [s for s in found.suggestions if s.kind == "retry_layer"]
    assert [s.edge.caller for s in layered] == ["web"]
    assert layered[0].evidence["failed_calls"] == 20
    assert layered[0].evidence["failed_on_its_own"] == 0
