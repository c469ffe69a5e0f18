"""Call-chain checks: timeouts that do not nest, retry amplification as a product over hops."""

from __future__ import annotations

from analytics.tuning.chain import amplification, chain_findings, parent_budgets_ms
from analytics.tuning.rules import RoutePolicy
from analytics.tuning.stats import EdgeKey

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
