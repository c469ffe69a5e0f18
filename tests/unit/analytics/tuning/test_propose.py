"""Concurrency limits for a callee shared by several callers (`propose.share_the_callee`): the
capacity is the callee's, so a knee seen from one caller limits every caller that matters."""

from __future__ import annotations

import math

from analytics.tuning.propose import (
    MIN_CALLER_SHARE,
    at_the_bottleneck,
    propose,
    share_the_callee,
)
from analytics.tuning.rules import Refusal, Suggestion, suggest_concurrency
from analytics.tuning.stats import Attempt, EdgeKey, EdgeStats, edge_stats
from tests.unit.analytics.tuning.traffic import T0

SECONDS = 180
# 20/s at 100 ms, 50/s at 110 ms, then 80/s where latency jumps to 500 ms: a knee at 5.5 in flight
KNEEING = ((20, 100.0), (50, 110.0), (80, 500.0))
ORDERS = EdgeKey("orders", "ledger", "static-ledger")
RATES = EdgeKey("rates", "ledger", "static-ledger")


def _calls(key: EdgeKey, levels: tuple[tuple[int, float], ...]) -> list[Attempt]:
    """`levels` of (calls per second, latency) in turn, 20 s each, over SECONDS."""
    out = []
    for second in range(SECONDS):
        rps, ms = levels[(second // 20) % len(levels)]
        for k in range(rps):
            n = f"{key.caller}-{second}-{k}"
            start = T0 + second + k / rps
            out.append(Attempt(key, n, n, start, ms, "GET", "10.0.0.9:80", 1, 200, ""))
    return out


def _stats(*attempts: list[Attempt]) -> dict[EdgeKey, EdgeStats]:
    return edge_stats([a for group in attempts for a in group], float(SECONDS))


def _shared(stats: dict[EdgeKey, EdgeStats]) -> dict[EdgeKey, Suggestion | Refusal | None]:
    limits = {edge: suggest_concurrency(s) for edge, s in stats.items()}
    checked = dict(zip(limits, at_the_bottleneck(limits), strict=True))
    return dict(zip(checked, share_the_callee(stats, checked), strict=True))


def test_a_knee_seen_by_one_caller_limits_every_caller_by_its_share() -> None:
    # rates sends a steady 30/s at 100 ms: on its own it never shows a knee
    stats = _stats(_calls(ORDERS, KNEEING), _calls(RATES, ((30, 100.0),)))
    assert isinstance(suggest_concurrency(stats[RATES]), Refusal)
    result = _shared(stats)
    orders, rates = result[ORDERS], result[RATES]
    assert isinstance(orders, Suggestion) and isinstance(rates, Suggestion)
    # orders: 9000 of 14400 calls (62.5 %) with 5.5 in flight at its knee -> the callee's knee
    # is 5.5 / 0.625 = 8.8 in flight, split 5.5 + 3.3
    assert orders.evidence["callee_knee_concurrency"] == 8.8
    assert orders.evidence["traffic_share"] == 0.625 and rates.evidence["traffic_share"] == 0.375
    parts = orders.evidence["knee_share"] + rates.evidence["knee_share"]
    assert math.isclose(parts, orders.evidence["callee_knee_concurrency"])
    assert rates.evidence["knee_from"] == orders.evidence["knee_from"] == ORDERS.label()
    # each with 20 % headroom, the kneeing caller's own limit unchanged
    assert orders.change["limits"]["max_connections"] == 7  # ceil(1.2 x 5.5)
    assert rates.change["limits"]["max_connections"] == 4  # ceil(1.2 x 3.3)
    assert rates.change["limits"]["max_requests"] == 8
    assert (
        rates.change["limits"]["pending_timeout_s"] == orders.change["limits"]["pending_timeout_s"]
    )
    assert "knee at 8.8 in flight seen by orders->ledger" in rates.summary


def test_a_caller_with_negligible_traffic_is_left_alone_and_told_why() -> None:
    # rates calls once every 10 s: 18 of 9018 calls
    stats = _stats(_calls(ORDERS, KNEEING), _calls(RATES, ((1, 100.0),) + ((0, 0.0),) * 9))
    result = _shared(stats)
    orders, rates = result[ORDERS], result[RATES]
    assert isinstance(orders, Suggestion) and orders.change["limits"]["max_connections"] == 7
    assert isinstance(rates, Refusal) and rates.kind == "concurrency"
    assert rates.evidence["traffic_share"] < MIN_CALLER_SHARE
    assert "too little" in rates.reason and "orders->ledger" in rates.reason


def test_no_knee_anywhere_limits_nobody() -> None:
    stats = _stats(_calls(ORDERS, ((20, 100.0), (40, 104.0))), _calls(RATES, ((30, 100.0),)))
    result = _shared(stats)
    assert all(isinstance(r, Refusal) and "no knee" in r.reason for r in result.values())
    found = propose(_calls(ORDERS, ((20, 100.0),)) + _calls(RATES, ((30, 100.0),)), 180.0, {})
    assert not [s for s in found.suggestions if s.kind == "concurrency"]


def test_propose_limits_both_callers_of_the_shared_leaf() -> None:
    found = propose(_calls(ORDERS, KNEEING) + _calls(RATES, ((30, 100.0),)), 180.0, {})
    limits = {s.edge: s for s in found.suggestions if s.kind == "concurrency"}
    assert set(limits) == {ORDERS, RATES}
    assert not [r for r in found.refusals if r.kind == "concurrency"]


def test_a_caller_of_a_callee_saturated_through_another_caller_is_not_limited() -> None:
    # pricing -> rates knees only because rates waits on ledger, whose knee orders sees
    pricing = EdgeKey("pricing", "rates", "default")
    stats = _stats(_calls(ORDERS, KNEEING), _calls(RATES, ((30, 100.0),)), _calls(pricing, KNEEING))
    result = _shared(stats)
    upper = result[pricing]
    assert isinstance(upper, Refusal) and "downstream" in upper.reason
    assert upper.evidence["downstream_knees"] == [RATES.label()]
    assert isinstance(result[RATES], Suggestion) and isinstance(result[ORDERS], Suggestion)
