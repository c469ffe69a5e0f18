"""Lifecycle: allowed transitions, documents the sidecar accepts, revert, before/after verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from analytics.tuning.lifecycle import (
    TransitionError,
    WindowFigures,
    apply_change,
    check_transition,
    compare,
    latency_allowance_ms,
    revert_change,
    route_policy,
)
from analytics.tuning.stats import EdgeKey
from sidecar.config import parse_config

EDGE = EdgeKey("web", "orders", "default")
RETRY = {"retry": {"attempts": 3, "budget": {"ratio": 0.1, "min_per_s": 1.0, "window_s": 10.0}}}


def test_transitions() -> None:
    check_transition("proposed", "accepted")
    check_transition("observing", "enforcing")
    check_transition("enforcing", "rolled_back")
    for state, to in (
        ("rejected", "accepted"),
        ("proposed", "verified"),
        ("rolled_back", "enforcing"),
    ):
        with pytest.raises(TransitionError):
            check_transition(state, to)


def test_a_new_route_for_the_default_route_is_valid_for_the_sidecar() -> None:
    doc = apply_change(None, "web", EDGE, "route", RETRY, observe=False)
    config = parse_config(doc)
    (route,) = config.routes
    assert route.name == "tuned-orders"
    assert route.retry is not None and route.retry.attempts == 3


def test_a_timeout_on_the_default_route_keeps_its_implicit_retry() -> None:
    change = {"timeout": {"request_s": 0.5, "per_try_s": 0.2}}
    doc = apply_change(None, "web", EDGE, "route", change, observe=False)
    (route,) = parse_config(doc).routes
    assert route.retry is not None and route.retry.attempts == 2
    assert route_policy(doc, EDGE).attempts == 2


def test_observe_mode_publishes_enforce_false() -> None:
    doc = apply_change(None, "web", EDGE, "route", RETRY, observe=True)
    assert doc["routes"][0]["retry"]["enforce"] is False
    parse_config(doc)


def test_changes_merge_into_an_existing_named_route_and_upstream() -> None:
    current: dict[str, Any] = {
        "service": "web",
        "upstreams": {"orders": {"lb": "round_robin"}},
        "routes": [
            {"name": "r1", "destinations": [{"upstream": "orders"}], "timeout": {"idle_s": 9}}
        ],
    }
    edge = EdgeKey("web", "orders", "r1")
    doc = apply_change(
        current, "web", edge, "route", {"timeout": {"request_s": 0.5}}, observe=False
    )
    assert doc["routes"][0]["timeout"] == {"idle_s": 9, "request_s": 0.5, "enforce": True}
    out = {"outlier": {"consecutive_5xx": 7}}
    doc = apply_change(doc, "web", edge, "upstream", out, observe=False)
    assert doc["upstreams"]["orders"] == {
        "lb": "round_robin",
        "outlier": {"consecutive_5xx": 7, "enforce": True},
    }
    parse_config(doc)
    assert current["routes"][0]["timeout"] == {"idle_s": 9}  # the input is not modified
    assert route_policy(doc, edge).request_s == 0.5


def test_revert_restores_only_the_suggestions_keys() -> None:
    before = {"service": "web", "upstreams": {"orders": {"lb": "round_robin"}}}
    applied = apply_change(before, "web", EDGE, "route", RETRY, observe=False)
    applied["upstreams"]["orders"]["lb"] = "least_request"  # someone else's later change
    reverted = revert_change(applied, before, EDGE, "route", RETRY)
    assert reverted["routes"] == []
    assert reverted["upstreams"]["orders"]["lb"] == "least_request"


def test_route_policy_defaults_to_the_implicit_route() -> None:
    policy = route_policy(None, EDGE)
    assert (policy.request_s, policy.attempts, policy.budget_ratio) == (15.0, 2, 0.2)


def fig(requests: int, error_rate: float, p99_ms: float, goodput: float) -> WindowFigures:
    return WindowFigures(requests, error_rate, p99_ms, goodput, requests / 100)


def test_verdicts() -> None:
    before = fig(1000, 0.03, 100.0, 9.7)
    assert compare(before, fig(1000, 0.001, 90.0, 9.99)).outcome == "better"
    assert compare(before, fig(1000, 0.03, 104.0, 9.7)).outcome == "same"
    worse = compare(before, fig(1000, 0.10, 300.0, 8.0))
    assert worse.outcome == "worse" and len(worse.reasons) == 3
    assert compare(before, fig(10, 0.5, 900.0, 0.1)).outcome == "inconclusive"
    # a retry may add its extra try and backoff to the calls it rescues
    slower = fig(1000, 0.0, 300.0, 10.0)
    assert compare(before, slower).outcome == "worse"
    allowance = latency_allowance_ms({"retry": RETRY["retry"], "timeout": {"per_try_s": 0.05}})
    assert allowance == 2 * (50 + 250)
    assert compare(before, slower, latency_allowance_ms=allowance).outcome == "better"
    # less goodput at half the offered load is not a regression
    assert compare(before, fig(500, 0.03, 100.0, 4.85)).outcome == "same"
