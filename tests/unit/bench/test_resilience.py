from __future__ import annotations

import math

import pytest

from bench.resilience import goodput, knee_capacity, p99_ms
from bench.resilience_metrics import SpanAttempt, amplification, goodput_buckets, recovery_s


def test_knee_capacity_is_the_last_step_before_p99_doubles() -> None:
    steps = [(3.0, 170.0, 3.0), (6.0, 160.0, 6.0), (8.0, 300.0, 8.0), (10.0, 530.0, 9.7)]
    assert knee_capacity(steps) == 8.0
    assert knee_capacity(steps[:1]) == 3.0
    with pytest.raises(ValueError, match="no ramp steps"):
        knee_capacity([])


def test_knee_needs_more_than_50_ms_on_a_fast_baseline() -> None:
    assert knee_capacity([(1.0, 5.0, 1.0), (2.0, 40.0, 2.0), (3.0, 80.0, 3.0)]) == 2.0


def test_goodput_and_p99_count_only_successes_for_goodput() -> None:
    samples = [(0.5, 0.1, True), (1.0, 0.2, False), (1.5, 3.0, True)]
    assert goodput(samples, 2.0) == 1.0
    assert goodput(samples, 0.0) == 0.0
    assert p99_ms(samples) == 3000.0


def test_goodput_buckets_count_successes_by_the_second_they_started_in() -> None:
    # (end, latency, ok): started at 10.1, 10.8, 10.95 (failed), 12.4
    samples = [(10.2, 0.1, True), (11.3, 0.5, True), (11.0, 0.05, False), (12.5, 0.1, True)]
    assert goodput_buckets(samples, 10.0, 13.0) == [2, 0, 1]
    assert goodput_buckets(samples, 10.0, 10.0) == []
    # a trailing part of a second is no bucket of its own
    assert goodput_buckets(samples, 10.0, 13.004) == [2, 0, 1]


def test_recovery_is_the_first_second_from_which_goodput_stays_up() -> None:
    # 4 ok journeys/s before; after the fault: nothing for 4 s, one good second, a dip, then up.
    buckets = [0, 0, 0, 0, 4, 0, 0, 4, 4, 4, 4, 4]
    assert recovery_s(buckets, 4.0) == 8.0  # the lone good second at 4 s does not count
    assert recovery_s([4, 4, 4], 4.0) == 0.0
    assert recovery_s(buckets, 5.0) is None  # never back to 5/s
    assert recovery_s(buckets, 0.0) is None  # nothing to return to
    assert recovery_s([], 4.0) is None


def test_recovery_tolerates_one_failed_journey_in_three_seconds_not_two() -> None:
    assert recovery_s([7, 7, 6, 7, 7, 7], 7.0) == 0.0  # 20 of 21 = 95.2 %
    assert recovery_s([7, 7, 6, 6, 7, 7, 7], 7.0) == 4.0  # 19 of 21 = 90.5 % around 2 and 3


def _a(caller: str, upstream: str, trace: str, attempt: int, error: str = "") -> SpanAttempt:
    return SpanAttempt(caller, upstream, trace, f"{caller}-{trace}", attempt, error, 0.0)


def test_amplification_is_attempts_sent_per_call_per_hop_and_leaf_attempts_per_journey() -> None:
    rows = [
        # journey t1: rates retried the leaf twice (3 attempts), pricing once
        _a("pricing", "rates", "t1", 1, "502"),
        _a("pricing", "rates", "t1", 2),
        _a("rates", "ledger", "t1", 1, "500"),
        _a("rates", "ledger", "t1", 2, "500"),
        _a("rates", "ledger", "t1", 3),
        # journey t2: one call, shed by the caller's breaker (never sent)
        _a("pricing", "rates", "t2", 1),
        _a("rates", "ledger", "t2", 1, "overflow"),
    ]
    amp = amplification(rows, "ledger", journeys=2)
    assert amp.per_hop == {("pricing", "rates"): (3, 2), ("rates", "ledger"): (3, 2)}
    assert amp.hop("rates", "ledger") == 1.5
    assert amp.worst_hop == 1.5 and amp.all_hops == 1.5
    assert amp.end_to_end == 1.5  # 3 attempts reached the leaf for 2 journeys
    assert math.isnan(amplification([], "ledger", 0).end_to_end)
