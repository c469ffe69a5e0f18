"""Rules under overload (issue 7): no retries into an overloaded upstream, a tight budget on
unbudgeted retries, concurrency limits that fail fast and only at the bottleneck, and outlier
ejection that never ejects the last instance (checked against the sidecar's own detector)."""

from __future__ import annotations

import random
from typing import Any

from analytics.controlplane.validation import validate_policy
from analytics.tuning.lifecycle import apply_change
from analytics.tuning.propose import propose
from analytics.tuning.rules import (
    BUDGET_RATIO,
    Refusal,
    RoutePolicy,
    Suggestion,
    max_ejection_percent,
    overload,
    suggest_budget,
    suggest_concurrency,
    suggest_outlier,
    suggest_retry,
)
from analytics.tuning.stats import Attempt, EdgeKey, EdgeStats, edge_stats
from sidecar.config import parse_config
from sidecar.http import Endpoint
from sidecar.layers.outlier import OutlierDetector, outlier_layer
from sidecar.stack import compose
from tests.fakes import ManualClock, MutableEndpoints, ScriptedUpstream, make_request
from tests.unit.analytics.tuning.traffic import T0, Edge, spread_503, traffic

STATIC = RoutePolicy(3.0, 1.0, 3, None)  # 3 attempts, 1 s per try, no budget
NO_RETRY = RoutePolicy(15.0, None, 1, None)


def _load_cycle(
    key: EdgeKey,
    *,
    seconds: int = 120,
    busy_error_rate: float = 0.15,
    quiet_error_rate: float = 0.0,
    endpoint: str = "10.0.0.1:80",
    seed: int = 3,
) -> list[Attempt]:
    """20 s quiet (4/s, 20 ms), then 20 s busy (20/s, 300 ms) and so on; failures (503) at
    `busy_error_rate` in busy seconds, `quiet_error_rate` in quiet ones."""
    rng = random.Random(seed)
    out: list[Attempt] = []
    for second in range(seconds):
        busy = (second // 20) % 2 == 1
        rps, ms = (20, 300.0) if busy else (4, 20.0)
        rate = busy_error_rate if busy else quiet_error_rate
        for k in range(rps):
            n = second * 100 + k
            failed = rng.random() < rate
            out.append(
                Attempt(
                    key,
                    f"{n:032x}",
                    f"{n:016x}",
                    T0 + second + k / rps,
                    ms * rng.uniform(0.9, 1.1),
                    "GET",
                    endpoint,
                    1,
                    503 if failed else 200,
                    "503" if failed else "",
                )
            )
    return out


def _one(attempts: list[Attempt], seconds: float = 120.0) -> EdgeStats:
    (only,) = edge_stats(attempts, seconds).values()
    return only


KEY = EdgeKey("rates", "ledger", "static-ledger")


def test_overload_is_failures_and_latency_rising_with_load() -> None:
    busy = overload(_one(_load_cycle(KEY)))
    assert busy is not None
    assert busy["busy_error_rate"] > 0.1 and busy["quiet_error_rate"] == 0.0
    assert busy["latency_ratio"] > 10
    # the same failure share spread evenly over load is noise, not overload
    assert overload(_one(_load_cycle(KEY, busy_error_rate=0.1, quiet_error_rate=0.1))) is None
    assert overload(_one(traffic(Edge(), seconds=120, fails=spread_503(0.1)), 120.0)) is None


def test_no_retries_are_added_into_an_overloaded_upstream() -> None:
    found = suggest_retry(_one(_load_cycle(KEY)), NO_RETRY)
    assert isinstance(found, Refusal)
    assert "overloaded" in found.reason and "limit concurrency" in found.reason


def test_retries_for_noise_carry_a_budget_of_at_most_10_percent() -> None:
    found = suggest_retry(
        _one(traffic(Edge(), seconds=600, fails=spread_503(0.05)), 600.0), NO_RETRY
    )
    assert isinstance(found, Suggestion)
    budget = found.change["retry"]["budget"]
    assert budget["ratio"] <= BUDGET_RATIO
    # at 5 calls/s, retries over a 10 s window stay within 1.1x, the reserve included
    assert (50 * budget["ratio"] + budget["min_per_s"] * budget["window_s"]) / 50 <= 0.1


def test_an_unbudgeted_retry_gets_a_tight_budget_and_keeps_its_other_settings() -> None:
    s = _one(traffic(Edge(upstream="ledger"), seconds=120), 120.0)
    found = suggest_budget(s, STATIC)
    assert isinstance(found, Suggestion) and found.kind == "retry_budget"
    assert found.change == {
        "retry": {"attempts": 3, "budget": {"ratio": 0.08, "min_per_s": 0.05, "window_s": 10.0}}
    }
    assert found.evidence["worst_case_amplification"] == 3
    doc = {
        "service": "rates",
        "upstreams": {"ledger": {}},
        "routes": [
            {
                "name": "static-ledger",
                "match": {"hosts": ["ledger"]},
                "destinations": [{"upstream": "ledger"}],
                "timeout": {"request_s": 3.0, "per_try_s": 1.0},
                "retry": {"attempts": 3, "on": ["5xx", "connect-failure", "reset"], "budget": None},
            }
        ],
    }
    edge = EdgeKey("rates", "ledger", "static-ledger")
    new = apply_change(doc, "rates", edge, "route", found.change, observe=False)
    validate_policy("rates", new)
    retry = new["routes"][0]["retry"]
    assert retry["on"] == ["5xx", "connect-failure", "reset"] and retry["budget"]["ratio"] == 0.08
    # the sidecar builds it with the budget
    parsed = parse_config({**new, "upstreams": {"ledger": {"endpoints": ["127.0.0.1:9"]}}})
    (route,) = parsed.routes
    assert route.retry is not None and route.retry.budget is not None
    assert route.retry.budget.ratio == 0.08 and route.retry.budget.min_per_s == 0.05


def test_budgets_are_left_alone_when_tight_or_when_there_is_no_overload() -> None:
    quiet = _one(traffic(Edge(upstream="ledger"), seconds=120), 120.0)
    assert suggest_budget(quiet, RoutePolicy(3.0, 1.0, 3, 0.1)) is None
    assert suggest_budget(quiet, RoutePolicy(15.0, None, 2, 0.2)) is None  # loose, no overload
    assert suggest_budget(quiet, NO_RETRY) is None
    busy = suggest_budget(_one(_load_cycle(KEY)), RoutePolicy(15.0, None, 2, 0.2))
    assert isinstance(busy, Suggestion) and "overload" in busy.evidence


def test_a_concurrency_limit_fails_fast_instead_of_queueing() -> None:
    found = suggest_concurrency(_one(_load_cycle(KEY, busy_error_rate=0.0)))
    assert isinstance(found, Suggestion)
    limits = found.change["limits"]
    assert limits["max_pending"] == limits["max_connections"]
    assert limits["max_requests"] == 2 * limits["max_connections"]
    # waiting at most twice the light-load latency (20 ms; 50 ms floor), not the 3 s default
    base_s = found.evidence["baseline_latency_ms"] / 1000
    assert limits["pending_timeout_s"] == 0.05 and base_s < 0.025


def _chain_attempts() -> list[Attempt]:
    """pricing -> rates -> ledger, where ledger is the bottleneck: both edges knee together."""
    out = []
    for caller, upstream in (("pricing", "rates"), ("rates", "ledger")):
        out += _load_cycle(EdgeKey(caller, upstream, "default"), busy_error_rate=0.0)
    return out


def test_concurrency_is_limited_at_the_bottleneck_only() -> None:
    found = propose(_chain_attempts(), 120.0, {})
    limits = [s for s in found.suggestions if s.kind == "concurrency"]
    assert [s.edge.label() for s in limits] == ["rates->ledger (default)"]
    (upper,) = [r for r in found.refusals if r.kind == "concurrency"]
    assert upper.edge.caller == "pricing" and "downstream" in upper.reason
    assert upper.evidence["downstream_knees"] == ["rates->ledger (default)"]


def test_outlier_ejection_is_refused_for_a_single_endpoint() -> None:
    found = suggest_outlier(_one(_load_cycle(KEY)), NO_RETRY)
    assert isinstance(found, Refusal) and "one endpoint" in found.reason


def _harness(config: Any, endpoints: list[Endpoint]) -> tuple[Any, Any, Any]:
    clock = ManualClock()
    source = MutableEndpoints({"ledger": endpoints})
    detector = OutlierDetector("ledger", config, source, clock=clock)
    upstream = ScriptedUpstream(clock=clock)
    handler = compose([outlier_layer({"ledger": detector}, clock=clock)], upstream)
    return detector, upstream, handler


async def test_the_suggested_ejection_never_takes_the_last_instance_in_the_sidecar() -> None:
    assert max_ejection_percent(1) == 0.0
    edge = Edge(upstream="ledger", endpoints=("10.0.0.1:80", "10.0.0.2:80"))
    found = suggest_outlier(
        _one(traffic(edge, seconds=120, fails=spread_503(0.01)), 120.0), NO_RETRY
    )
    assert isinstance(found, Suggestion)
    percent = found.change["outlier"]["max_ejection_percent"]
    doc = {"service": "rates", "upstreams": {"ledger": {"endpoints": list(edge.endpoints)}}}
    new = apply_change(doc, "rates", found.edge, "upstream", found.change, observe=False)
    validate_policy("rates", new)
    config = parse_config(new).upstreams["ledger"].outlier
    assert config is not None and config.max_ejection_percent == percent
    a, b = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)
    detector, upstream, handler = _harness(config, [a, b])
    # both instances fail alike (a fault shared by all): one may go, never both
    for _ in range(3 * found.change["outlier"]["consecutive_5xx"]):
        for endpoint in (a, b):
            upstream.statuses[:] = [503]
            request = make_request(upstream="ledger")
            request.context.endpoint = endpoint
            await handler(request)
    states = [detector.stats()["endpoints"][e.address]["state"] for e in (a, b)]
    assert states.count("open") == 1 and detector.skipped_max_percent > 0


def test_a_few_ms_of_latency_noise_on_a_fast_service_is_no_knee() -> None:
    key = EdgeKey("gateway", "auth", "default")
    attempts = []
    for second in range(120):
        busy = (second // 20) % 2 == 1
        rps, ms = (12, 14.0) if busy else (4, 7.0)  # 2x slower when busy, but only +7 ms
        for k in range(rps):
            n = second * 100 + k
            start = T0 + second + k / rps
            attempts.append(Attempt(key, f"{n:032x}", "", start, ms, "GET", "a:1", 1, 200, ""))
    found = suggest_concurrency(_one(attempts))
    assert isinstance(found, Refusal) and "no knee" in found.reason
