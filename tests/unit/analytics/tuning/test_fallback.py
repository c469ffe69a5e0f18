"""The fallback rule: degraded upstreams on read routes get a route fallback, writes never."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from analytics.controlplane.validation import validate_policy
from analytics.tuning.lifecycle import apply_change
from analytics.tuning.propose import propose
from analytics.tuning.rules import FALLBACK_TRIGGERS, Refusal, Suggestion, suggest_fallback
from analytics.tuning.stats import EdgeStats, edge_stats
from sidecar.config import parse_config
from tests.unit.analytics.tuning.traffic import Edge, traffic

CATALOG = Edge(upstream="catalog", route="items")


def _refused(rate: float, reason: str = "overflow") -> Callable[[random.Random, str, float], str]:
    """Calls the proxy could not send upstream at `rate` (error.type = the proxy reason)."""
    return lambda rng, endpoint, t: reason if rng.random() < rate else ""


def _stats(edge: Edge = CATALOG, rate: float = 0.05, reason: str = "overflow") -> EdgeStats:
    attempts = traffic(edge, seconds=120, rps=5, fails=_refused(rate, reason))
    (only,) = edge_stats(attempts, 120.0).values()
    return only


def _doc(*routes: dict[str, Any], upstreams: tuple[str, ...] = ("catalog",)) -> dict[str, Any]:
    return {
        "service": "web",
        "upstreams": {name: {} for name in upstreams},
        "routes": list(routes),
    }


ITEMS = {
    "name": "items",
    "match": {"path_prefix": "/items"},
    "destinations": [{"upstream": "catalog"}],
}


def test_read_route_with_overflow_gets_a_503_json_fallback_naming_the_dependency() -> None:
    s = _stats()
    found = suggest_fallback(s, _doc(ITEMS))
    assert isinstance(found, Suggestion)
    assert found.kind == "fallback" and found.target == "route"
    fallback = found.change["fallback"]
    assert fallback["on"] == list(FALLBACK_TRIGGERS)
    response = fallback["response"]
    assert response["status"] == 503
    assert response["headers"]["content-type"] == "application/json"
    assert json.loads(response["body"]) == {
        "error": "dependency_degraded",
        "dependency": "catalog",
        "route": "items",
    }
    assert found.evidence["calls_refused_by_proxy"] == found.evidence["by_reason"]["overflow"]
    assert found.evidence["calls_refused_by_proxy"] >= 5
    assert 0 < found.confidence <= 1
    assert "catalog" in found.summary
    # accepted: the caller's document stays valid for the sidecar schema
    doc = apply_change(_doc(ITEMS), "web", s.edge, "route", found.change, observe=False)
    validate_policy("web", doc)
    assert doc["routes"][0]["fallback"] == {**fallback, "enforce": True}


def test_a_fallback_accepted_in_observe_mode_is_observe_only_in_the_sidecar() -> None:
    s = _stats()
    found = suggest_fallback(s, _doc(ITEMS))
    assert isinstance(found, Suggestion)
    doc = apply_change(_doc(ITEMS), "web", s.edge, "route", found.change, observe=True)
    validate_policy("web", doc)
    assert doc["routes"][0]["fallback"]["enforce"] is False
    # the sidecar builds it observe-only: it records, it does not answer
    (route,) = parse_config(
        {**doc, "upstreams": {"catalog": {"endpoints": ["127.0.0.1:9"]}}}
    ).routes
    assert route.fallback is not None and route.fallback.enforce is False
    promoted = apply_change(doc, "web", s.edge, "route", found.change, observe=False)
    assert promoted["routes"][0]["fallback"]["enforce"] is True


def test_a_second_upstream_serving_the_route_becomes_the_fallback_upstream() -> None:
    mirror = {
        "name": "items-mirror",
        "match": {"path_prefix": "/items", "headers": {"x-mirror": "1"}},
        "destinations": [{"upstream": "catalog-replica"}],
    }
    doc = _doc(ITEMS, mirror, upstreams=("catalog", "catalog-replica"))
    found = suggest_fallback(_stats(reason="no_healthy_upstream"), doc)
    assert isinstance(found, Suggestion)
    assert found.change["fallback"] == {
        "on": list(FALLBACK_TRIGGERS),
        "upstream": "catalog-replica",
    }
    assert found.evidence["fallback_upstream"] == "catalog-replica"
    validate_policy(
        "web", apply_change(doc, "web", found.edge, "route", found.change, observe=False)
    )
    # ... unless that upstream is failing too
    degraded = suggest_fallback(
        _stats(reason="no_healthy_upstream"), doc, failing_upstreams=frozenset({"catalog-replica"})
    )
    assert isinstance(degraded, Suggestion) and "response" in degraded.change["fallback"]


def test_refused_for_writes() -> None:
    for method, word in (("POST", "not idempotent"), ("PUT", "not a read")):
        edge = Edge(upstream="catalog", route="items", method=method)
        found = suggest_fallback(_stats(edge), _doc(ITEMS))
        assert isinstance(found, Refusal), method
        assert found.kind == "fallback" and word in found.reason
        assert found.evidence["methods"] == [method]


def test_refused_without_proxy_refusals_and_quiet_when_a_fallback_exists() -> None:
    plain_503 = edge_stats(
        traffic(CATALOG, seconds=120, fails=lambda rng, e, t: "503" if rng.random() < 0.2 else ""),
        120.0,
    )
    for s in (*plain_503.values(), _stats(rate=0.0)):
        found = suggest_fallback(s, _doc(ITEMS))
        assert isinstance(found, Refusal)
        assert "need 5" in found.reason and found.evidence["calls_refused_by_proxy"] == 0
    existing = {**ITEMS, "fallback": {"response": {"status": 503}}}
    assert suggest_fallback(_stats(), _doc(existing)) is None


def test_propose_runs_the_fallback_rule_per_edge() -> None:
    attempts = traffic(CATALOG, seconds=120, fails=_refused(0.05, "circuit_open"))
    attempts += traffic(
        Edge(upstream="carts", route="add", method="POST"),
        seconds=120,
        fails=_refused(0.05),
    )
    found = propose(attempts, 120.0, {"web": _doc(ITEMS)})
    fallbacks = [s for s in found.suggestions if s.kind == "fallback"]
    assert [s.edge.upstream for s in fallbacks] == ["catalog"]
    refused = [r for r in found.refusals if r.kind == "fallback"]
    assert [r.edge.upstream for r in refused] == ["carts"]
