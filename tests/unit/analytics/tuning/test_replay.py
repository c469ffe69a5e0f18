"""Counterfactual replay on recorded calls: timeouts cut, retries rescued, budget, ejections."""

from __future__ import annotations

import random

from analytics.tuning.replay import replay
from analytics.tuning.rules import Suggestion
from analytics.tuning.stats import EdgeKey, group_calls
from tests.unit.analytics.tuning.traffic import Edge, spread_503, traffic

KEY = EdgeKey("web", "orders", "default")


def suggestion(change: dict[str, object]) -> Suggestion:
    return Suggestion("x", KEY, "route", change, {}, 1.0, "")


def test_timeouts_count_calls_slower_than_the_new_limit() -> None:
    def slow_tail(rng: random.Random, endpoint: str, t: float) -> float:
        return 500.0 if int(t) % 100 == 0 else 20.0

    calls = group_calls(traffic(Edge(), seconds=200, latency_ms=slow_tail))
    out = replay(suggestion({"timeout": {"request_s": 0.1, "per_try_s": None}}), calls)
    assert out.would_time_out == 10  # two slow seconds x 5 calls
    assert "10 requests would have timed out" in out.text()


def test_retries_rescue_spread_out_failures_with_little_extra_load() -> None:
    calls = group_calls(traffic(Edge(), fails=spread_503(0.03)))
    retry = {"attempts": 3, "budget": {"ratio": 0.1, "min_per_s": 1.0, "window_s": 10.0}}
    out = replay(suggestion({"retry": retry}), calls)
    assert out.retried == out.failures > 0
    assert out.rescued > 0.9 * out.failures
    assert out.extra_load < 0.05


def test_retries_do_not_rescue_an_outage() -> None:
    calls = group_calls(traffic(Edge(), seconds=60, fails=lambda rng, e, t: "503"))
    out = replay(suggestion({"retry": {"attempts": 3, "budget": None}}), calls)
    assert out.rescued == 0
    assert out.extra_load == 2.0  # every call tries three times


def test_budget_holds_retries_back() -> None:
    calls = group_calls(traffic(Edge(), seconds=60, rps=20, fails=lambda rng, e, t: "503"))
    budget = {"ratio": 0.1, "min_per_s": 0.0, "window_s": 10.0}
    out = replay(suggestion({"retry": {"attempts": 2, "budget": budget}}), calls)
    assert out.retried == 6 * 20  # 10 % of the 200 calls in each of the six 10 s windows
    assert out.budget_denied == 1200 - 120


def test_post_is_not_retried_without_opt_in() -> None:
    calls = group_calls(traffic(Edge(method="POST"), fails=spread_503(0.05)))
    out = replay(suggestion({"retry": {"attempts": 2, "budget": None}}), calls)
    assert out.retried == 0


def test_removal_loses_the_calls_retries_saved() -> None:
    calls = group_calls(traffic(Edge(), fails=spread_503(0.05), retry_attempts=2))
    saved = sum(1 for c in calls if len(c.attempts) > 1 and not c.failed)
    out = replay(suggestion({"retry": None}), calls)
    assert out.lost_successes == saved > 0
    assert out.extra_load < 0


def test_ejections_follow_consecutive_failures_per_endpoint() -> None:
    calls = group_calls(
        traffic(
            Edge(), seconds=60, fails=lambda rng, e, t: "503" if e.startswith("10.0.0.1") else ""
        )
    )
    out = replay(suggestion({"outlier": {"consecutive_5xx": 5}}), calls)
    assert out.would_eject == 100 // 5  # 100 calls went to the failing endpoint
