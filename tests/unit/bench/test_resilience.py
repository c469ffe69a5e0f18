from __future__ import annotations

import pytest

from bench.resilience import goodput, knee_capacity, p99_ms, recovery_s


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


def test_recovery_is_the_first_second_with_95_percent_of_pre_fault_goodput() -> None:
    # 1 ok journey/s before; after clearing at t=100: nothing for 4 s, then 1/s again.
    samples = [(100.0 + t + 0.5, 0.1, t >= 4) for t in range(15)]
    assert recovery_s(samples, 100.0, 1.0, 15.0) == 4.0
    assert recovery_s(samples, 100.0, 2.0, 15.0) is None  # never back to 2/s
    assert recovery_s(samples, 100.0, 0.0, 15.0) is None  # nothing to return to
