"""Each rule produces the right suggestion on constructed traffic and refuses the wrong one."""

from __future__ import annotations

import random

from analytics.tuning.rules import (
    Refusal,
    RoutePolicy,
    Suggestion,
    suggest_concurrency,
    suggest_outlier,
    suggest_removal,
    suggest_retry,
    suggest_timeout,
)
from analytics.tuning.stats import Attempt, EdgeKey, EdgeStats, edge_stats
from tests.unit.analytics.tuning.traffic import T0, Edge, spread_503, traffic

DEFAULT = RoutePolicy(15.0, None, 2, 0.2)
NO_RETRY = RoutePolicy(15.0, None, 1, None)


def stats_of(edge: Edge | None = None, **kwargs: object) -> EdgeStats:
    attempts = traffic(edge or Edge(), **kwargs)  # type: ignore[arg-type]
    (only,) = edge_stats(attempts, float(kwargs.get("seconds", 600))).values()  # type: ignore[arg-type]
    return only


def test_timeout_is_above_the_healthy_p999_with_headroom() -> None:
    s = stats_of()
    found = suggest_timeout(s, NO_RETRY)
    assert isinstance(found, Suggestion)
    per_try_s = found.change["timeout"]["request_s"]
    assert per_try_s * 1000 >= s.p(0.999) * 1.2
    assert per_try_s * 1000 >= 2 * s.p(0.99)
    assert found.evidence["p999_ms"] == s.p(0.999)
    assert found.evidence["window_s"] == 600
    assert 0 < found.confidence <= 1


def test_timeout_never_below_p999_even_with_a_long_tail() -> None:
    def tail(rng: random.Random, endpoint: str, t: float) -> float:
        return 900.0 if rng.random() < 0.005 else rng.uniform(10, 30)

    s = stats_of(latency_ms=tail)
    found = suggest_timeout(s, NO_RETRY)
    assert isinstance(found, Suggestion)
    assert found.change["timeout"]["request_s"] * 1000 >= s.p(0.999) >= 900


def test_timeout_with_retries_sets_per_try_and_a_total_covering_every_try() -> None:
    found = suggest_timeout(stats_of(), DEFAULT)
    assert isinstance(found, Suggestion)
    timeout = found.change["timeout"]
    assert timeout["per_try_s"] is not None
    assert timeout["request_s"] >= 2 * timeout["per_try_s"]


def test_timeout_refused_without_enough_samples() -> None:
    found = suggest_timeout(stats_of(seconds=20, rps=2), NO_RETRY)
    assert isinstance(found, Refusal)
    assert "successful tries" in found.reason


def test_timeout_fits_in_the_parent_budget() -> None:
    s = stats_of()
    found = suggest_timeout(s, NO_RETRY, parent_budget_ms=1.3 * s.p(0.999))
    assert isinstance(found, Suggestion)
    assert found.change["timeout"]["request_s"] * 1000 <= 1.3 * s.p(0.999)


def test_timeout_is_not_squeezed_to_the_healthy_p999_by_the_parent() -> None:
    # the parent leaves 1.1x p99.9 per try: a try that tight fails on any latency bump
    s = stats_of()
    found = suggest_timeout(s, NO_RETRY, parent_budget_ms=1.1 * s.p(0.999))
    assert isinstance(found, Refusal)
    assert "headroom" in found.reason and "1.2x" in found.reason


def test_timeout_refused_when_the_parent_leaves_less_than_p999() -> None:
    s = stats_of()
    found = suggest_timeout(s, DEFAULT, parent_budget_ms=s.p(0.999))
    assert isinstance(found, Refusal)
    assert "budget" in found.reason and "p99.9" in found.reason


def test_timeout_already_right_is_not_suggested_again() -> None:
    s = stats_of()
    first = suggest_timeout(s, NO_RETRY)
    assert isinstance(first, Suggestion)
    now = RoutePolicy(first.change["timeout"]["request_s"], None, 1, None)
    assert suggest_timeout(s, now) is None


def test_retry_for_transient_spread_out_503s_on_get() -> None:
    s = stats_of(fails=spread_503(0.03))
    found = suggest_retry(s, NO_RETRY, per_try_s=0.1)
    assert isinstance(found, Suggestion)
    retry = found.change["retry"]
    assert retry["attempts"] in (2, 3)
    assert 0.05 <= retry["budget"]["ratio"] <= 0.2
    assert "gateway-error" in retry["on"]
    assert "allow_non_idempotent" not in retry
    assert found.change["timeout"]["per_try_s"] == 0.1
    assert found.evidence["transient_failures"] > 0


def test_no_retries_for_post_without_opt_in() -> None:
    s = stats_of(Edge(method="POST"), fails=spread_503(0.03))
    found = suggest_retry(s, NO_RETRY)
    assert isinstance(found, Refusal)
    assert "POST is not idempotent" in found.reason


def test_post_retries_with_opt_in_say_so_in_the_policy() -> None:
    s = stats_of(Edge(method="POST"), fails=spread_503(0.03))
    found = suggest_retry(s, NO_RETRY, allow_non_idempotent=True)
    assert isinstance(found, Suggestion)
    assert found.change["retry"]["allow_non_idempotent"] is True


def test_no_retries_for_non_transient_failures() -> None:
    s = stats_of(fails=lambda rng, e, t: "500" if rng.random() < 0.03 else "")
    found = suggest_retry(s, NO_RETRY)
    assert isinstance(found, Refusal) and "transient" in found.reason


def test_no_retries_for_an_outage_bunched_in_time() -> None:
    s = stats_of(fails=lambda rng, e, t: "503" if 100 <= t % 1000 < 112 else "")
    found = suggest_retry(s, NO_RETRY)
    assert isinstance(found, Refusal) and "bunched" in found.reason


def test_no_retries_when_one_endpoint_has_the_failures() -> None:
    s = stats_of(fails=lambda rng, e, t: "503" if e.startswith("10.0.0.2") else "")
    found = suggest_retry(s, NO_RETRY)
    assert isinstance(found, Refusal)
    assert "10.0.0.2" in found.reason or "multiply" in found.reason


def test_no_retries_when_most_tries_fail() -> None:
    s = stats_of(fails=spread_503(0.7))
    found = suggest_retry(s, NO_RETRY)
    assert isinstance(found, Refusal) and "multiply" in found.reason


def test_outlier_threshold_trips_a_healthy_endpoint_less_than_once_a_day() -> None:
    s = stats_of(fails=spread_503(0.01))
    found = suggest_outlier(s, NO_RETRY)
    assert isinstance(found, Suggestion)
    k = found.change["outlier"]["consecutive_5xx"]
    healthy = found.evidence["healthy_error_rate"]
    per_day = found.evidence["per_endpoint_rps"] * 86_400
    assert per_day * healthy**k < 1
    assert per_day * healthy ** (k - 1) >= 1 or k == 3  # and not stricter than needed
    assert 0.5 <= found.change["outlier"]["success_rate"]["threshold"] <= 0.95


def test_latency_ejection_for_an_endpoint_slower_than_its_peers() -> None:
    def slow_one(rng: random.Random, endpoint: str, t: float) -> float:
        return rng.uniform(200, 260) if endpoint.startswith("10.0.0.3") else rng.uniform(10, 30)

    found = suggest_outlier(stats_of(latency_ms=slow_one), NO_RETRY)
    assert isinstance(found, Suggestion)
    assert found.change["outlier"]["latency"]["factor"] >= 1.5
    assert found.evidence["slow_endpoint"] == "10.0.0.3:8080"


def test_no_latency_ejection_when_endpoints_are_alike() -> None:
    found = suggest_outlier(stats_of(), NO_RETRY)
    assert isinstance(found, Suggestion)
    assert "latency" not in found.change["outlier"]


def test_concurrency_limit_at_the_latency_knee() -> None:
    # Three load levels: 20/s at 100 ms, 50/s at 110 ms, then 80/s where latency jumps to 500 ms.
    levels = ((20, 100.0), (50, 110.0), (80, 500.0))
    key = EdgeKey("web", "orders", "default")
    attempts = []
    for second in range(180):
        rps, ms = levels[(second // 20) % 3]
        for k in range(rps):
            n = second * 1000 + k
            attempts.append(
                Attempt(key, f"{n:032x}", "", T0 + second + k / rps, ms, "GET", "a:1", 1, 200, "")
            )
    (s,) = edge_stats(attempts, 180.0).values()
    found = suggest_concurrency(s)
    assert isinstance(found, Suggestion)
    assert found.evidence["knee_concurrency"] == 5.5  # 50/s x 110 ms
    assert found.change["limits"]["max_connections"] == 7  # knee + 20 % headroom
    assert found.change["limits"]["max_requests"] == 14


def test_concurrency_refused_without_a_knee() -> None:
    found = suggest_concurrency(stats_of(seconds=120))
    assert isinstance(found, Refusal) and "knee" in found.reason


def test_removal_of_retries_that_never_succeed() -> None:
    # Whole seconds fail: the retry 1 ms later fails as well.
    s = stats_of(fails=lambda rng, e, t: "503" if int(t) % 10 < 2 else "", retry_attempts=2)
    found = suggest_removal(s, DEFAULT)
    assert isinstance(found, Suggestion)
    assert found.change == {"retry": None}
    assert found.evidence["retry_successes"] == 0
    assert "hurt" in found.summary


def test_no_removal_of_retries_that_help() -> None:
    s = stats_of(fails=spread_503(0.05), retry_attempts=2)
    assert suggest_removal(s, DEFAULT) is None
