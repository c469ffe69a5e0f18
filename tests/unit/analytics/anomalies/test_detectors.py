"""Detectors on constructed per-minute series."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from analytics.anomalies import (
    DetectorConfig,
    Point,
    detect_burn_rate,
    detect_change_points,
    detect_deviations,
    detect_edge_changes,
    detect_stopped_instances,
)

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
CFG = DetectorConfig()


def _minute(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def _steady(n: int, *, requests: int = 100, errors: int = 0, p99: float = 20.0) -> list[Point]:
    # A little deterministic noise so the MAD is not zero.
    return [Point(_minute(i), requests + i % 5, errors, p99 + (i % 3)) for i in range(n)]


def test_a_latency_spike_after_a_steady_hour_is_one_anomaly_spanning_its_minutes() -> None:
    series = _steady(60) + [Point(_minute(60 + i), 100, 0, 200.0) for i in range(3)]

    found = detect_deviations("web->db", series, _minute(60), CFG)

    assert [(a.signal, a.start, a.end) for a in found] == [
        ("latency_p99", _minute(60), _minute(62))
    ]
    assert found[0].expected == pytest.approx(21.0)
    assert found[0].services == ("web", "db")


def test_normal_noise_raises_nothing() -> None:
    assert detect_deviations("web->db", _steady(90), _minute(60), CFG) == []


def test_an_error_ratio_rise_fires_and_a_rate_drop_fires() -> None:
    series = [*_steady(60), Point(_minute(60), 100, 30, 20.0), Point(_minute(61), 10, 0, 20.0)]

    found = {a.signal: a for a in detect_deviations("db", series, _minute(60), CFG)}

    assert found["error_ratio"].start == _minute(60)
    assert found["error_ratio"].observed == pytest.approx(0.3)
    assert found["rate"].start == _minute(61)


def test_too_little_history_is_not_judged() -> None:
    series = [*_steady(5), Point(_minute(5), 100, 0, 500.0)]
    assert detect_deviations("db", series, _minute(5), CFG) == []


def test_daily_seasonality_explains_a_recurring_peak() -> None:
    day = 24 * 60
    series = []
    for i in range(day + 70):
        peak = 60 <= i % day < 65  # every day at 01:00, five minutes of slower responses
        series.append(Point(_minute(i), 100 + i % 5, 0, (300.0 if peak else 20.0) + i % 3))

    found = detect_deviations("db", series, _minute(day + 60), CFG)

    assert found == []


def test_change_point_finds_the_level_shift() -> None:
    series = _steady(20) + [Point(_minute(20 + i), 100, 0, 80.0 + i % 3) for i in range(20)]

    found = detect_change_points("db", series, _minute(10), CFG)

    assert [(a.signal, a.start) for a in found] == [("change_point_latency_p99", _minute(20))]
    assert found[0].observed == pytest.approx(81.0)


def test_burn_rate_fast_needs_both_windows_above_14_4x() -> None:
    # SLO 99.9 %: budget 0.1 %. 3 % errors is a 30x burn over 5 m, but the 1 h window passes
    # 14.4x only after about 29 bad minutes.
    short = _steady(60) + [Point(_minute(60 + i), 100, 3, 20.0) for i in range(5)]
    assert detect_burn_rate("db", short, _minute(60), CFG) == []

    long = _steady(60) + [Point(_minute(60 + i), 100, 3, 20.0) for i in range(40)]
    found = [
        a for a in detect_burn_rate("db", long, _minute(60), CFG) if a.signal == "burn_rate_fast"
    ]

    assert len(found) == 1
    assert _minute(85) <= found[0].start <= _minute(90)
    assert found[0].end == _minute(99)


def test_one_failed_request_at_low_traffic_does_not_burn_the_budget() -> None:
    series = [Point(_minute(i), 20, 0, 20.0) for i in range(10)] + [Point(_minute(10), 20, 1, 20.0)]
    assert detect_burn_rate("db", series, _minute(10), CFG) == []


def test_new_and_vanished_edges() -> None:
    found = detect_edge_changes(
        {"a->b": 50, "a->c": 40}, {"a->b": 45, "a->d": 12}, _minute(0), _minute(10), CFG
    )
    assert sorted((a.signal, a.subject) for a in found) == [
        ("new_edge", "a->d"),
        ("vanished_edge", "a->c"),
    ]
    assert detect_edge_changes({}, {"a->d": 12}, _minute(0), _minute(10), CFG) == []


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="slo_target"):
        DetectorConfig(slo_target=1.0)


def _noisy_p99(n: int, *, p50: float) -> list[Point]:
    # p99 of a few requests jumps around (nearly the maximum); the median is steady.
    return [
        Point(_minute(i), 20, 0, (15.0, 40.0, 22.0, 31.0)[i % 4], p50 + i % 2) for i in range(n)
    ]


def test_median_latency_shift_fires_where_the_noisy_p99_cannot() -> None:
    series = _noisy_p99(20, p50=10.0) + [
        Point(_minute(20 + i), 20, 0, 60.0, 50.0) for i in range(3)
    ]
    found = detect_deviations("catalog", series, _minute(20), CFG)
    signals = {a.signal for a in found}
    assert "latency_p50" in signals
    assert "latency_p99" not in signals  # 60 ms is within the p99's own spread
    p50 = next(a for a in found if a.signal == "latency_p50")
    assert (p50.start, p50.end, p50.observed) == (_minute(20), _minute(22), 50.0)


def test_median_signal_is_off_without_p50_and_for_steady_series() -> None:
    without = [Point(p.minute, p.requests, p.errors, p.p99_ms) for p in _noisy_p99(23, p50=10.0)]
    assert detect_deviations("catalog", without, _minute(20), CFG) == []
    steady = _noisy_p99(30, p50=10.0)
    assert detect_deviations("catalog", steady, _minute(20), CFG) == []
    assert detect_change_points("catalog", steady, _minute(10), CFG) == []


def test_change_point_on_median_latency_only_when_every_point_has_it() -> None:
    series = _noisy_p99(15, p50=10.0) + [
        Point(_minute(15 + i), 20, 0, (15.0, 40.0, 22.0, 31.0)[i % 4], 50.0 + i % 2)
        for i in range(10)
    ]
    found = detect_change_points("catalog", series, _minute(10), CFG)
    assert [(a.signal, a.start) for a in found] == [("change_point_latency_p50", _minute(15))]
    partial = [*series[:-1], Point(_minute(24), 20, 0, 22.0)]
    assert detect_change_points("catalog", partial, _minute(10), CFG) == []


def test_min_run_points_drops_single_minute_spikes_and_keeps_sustained_shifts() -> None:
    spike = [*_steady(20), Point(_minute(20), 100, 0, 300.0), *_steady(0)]
    spike += [Point(_minute(21 + i), 100, 0, 20.0 + i % 3) for i in range(3)]
    sustained = [*_steady(20)] + [Point(_minute(20 + i), 100, 0, 300.0) for i in range(2)]
    cfg = DetectorConfig(min_run_points=2)
    assert [a.signal for a in detect_deviations("a->b", spike, _minute(20), CFG)] == ["latency_p99"]
    assert detect_deviations("a->b", spike, _minute(20), cfg) == []
    found = detect_deviations("a->b", sustained, _minute(20), cfg)
    assert [(a.signal, a.start, a.end) for a in found] == [
        ("latency_p99", _minute(20), _minute(21))
    ]
    # The first minute alone is not reported yet: that is the delay the setting costs.
    assert detect_deviations("a->b", sustained[:-1], _minute(20), cfg) == []
    with pytest.raises(ValueError, match="min_run_points"):
        DetectorConfig(min_run_points=0)


def test_a_fine_step_counts_runs_in_buckets_and_keeps_the_baseline_in_minutes() -> None:
    def at(k: int) -> datetime:
        return T0 + timedelta(seconds=10 * k)

    steady = [Point(at(k), 30 + k % 4, 0, 20.0 + k % 3) for k in range(30)]
    slow = [Point(at(30 + k), 30, 0, 300.0) for k in range(2)]
    fine = DetectorConfig(step_s=10, baseline_minutes=2, min_baseline_points=9, min_run_points=2)
    found = detect_deviations("a->b", [*steady, *slow], at(30), fine)
    # Two consecutive 10 s buckets are one run, reported as soon as the second is complete.
    assert [(a.signal, a.start, a.end) for a in found] == [("latency_p99", at(30), at(31))]
    assert detect_deviations("a->b", [*steady, slow[0]], at(30), fine) == []
    # Buckets 20 s apart are not consecutive at this step: two single points, no run.
    apart = [*steady, slow[0], Point(at(32), 30, 0, 300.0)]
    assert detect_deviations("a->b", apart, at(30), fine) == []
    # The baseline is 2 minutes of buckets (12), not 2 buckets: too little history, no verdict.
    assert detect_deviations("a->b", [*steady[-8:], *slow], at(30), fine) == []
    for bad in (0, 7, 61):
        with pytest.raises(ValueError, match="step_s"):
            DetectorConfig(step_s=bad)
    assert fine.step == timedelta(seconds=10)


def _with_median(n: int) -> list[Point]:
    return [Point(_minute(i), 30 + i % 4, 0, 20.0 + i % 3, 8.0 + i % 2) for i in range(n)]


def test_a_tail_only_deviation_must_last_tail_min_run_points() -> None:
    cfg = DetectorConfig(min_run_points=2, tail_min_run_points=4)
    # A stall delays the slowest few requests for two buckets: p99 up, median steady.
    blip = [*_with_median(20), *(Point(_minute(20 + i), 30, 0, 200.0, 8.5) for i in range(2))]
    assert detect_deviations("a->b", blip, _minute(20), DetectorConfig(min_run_points=2))
    assert detect_deviations("a->b", blip, _minute(20), cfg) == []
    # The same shift lasting four buckets is reported.
    lasting = [*_with_median(20), *(Point(_minute(20 + i), 30, 0, 200.0, 8.5) for i in range(4))]
    found = detect_deviations("a->b", lasting, _minute(20), cfg)
    assert [(a.signal, a.start, a.end) for a in found] == [
        ("latency_p99", _minute(20), _minute(23))
    ]


def test_a_shift_every_request_pays_is_reported_by_the_median_after_min_run_points() -> None:
    cfg = DetectorConfig(min_run_points=2, tail_min_run_points=4)
    slow = [*_with_median(20), *(Point(_minute(20 + i), 30, 0, 200.0, 150.0) for i in range(2))]
    found = detect_deviations("a->b", slow, _minute(20), cfg)
    assert [(a.signal, a.start, a.end) for a in found] == [
        ("latency_p50", _minute(20), _minute(21))
    ]


def test_without_a_median_the_p99_is_the_only_latency_signal_and_keeps_min_run_points() -> None:
    cfg = DetectorConfig(min_run_points=2, tail_min_run_points=4)
    blind = [
        Point(p.minute, p.requests, p.errors, p.p99_ms)
        for p in [*_with_median(20), *(Point(_minute(20 + i), 30, 0, 200.0) for i in range(2))]
    ]
    found = detect_deviations("a->b", blind, _minute(20), cfg)
    assert [(a.signal, a.start, a.end) for a in found] == [
        ("latency_p99", _minute(20), _minute(21))
    ]
    with pytest.raises(ValueError, match="tail_min_run_points"):
        DetectorConfig(tail_min_run_points=-1)


def _at(k: int) -> datetime:
    return T0 + timedelta(seconds=5 * k)


FINE = DetectorConfig(step_s=5, baseline_minutes=10)


def _replicas(
    n: int, *, one: Callable[[int], tuple[int, int]], two: Callable[[int], tuple[int, int]]
) -> dict[str, list[Point]]:
    """Two replicas' (requests, errors) per 5 s bucket k; (0, 0) buckets are left out."""
    out: dict[str, list[Point]] = {"cat-1": [], "cat-2": []}
    for k in range(n):
        for name, f in (("cat-1", one), ("cat-2", two)):
            requests, errors = f(k)
            if requests:
                out[name].append(Point(_at(k), requests, errors, 0.0))
    return out


def test_a_replica_answering_nothing_while_its_sibling_serves_is_stopped() -> None:
    # cat-1 crashes at bucket 20: nothing, then one failed probe; cat-2 takes the traffic.
    crashed = _replicas(
        40,
        one=lambda k: (10, 0) if k < 20 else ((1, 1) if k == 30 else (0, 0)),
        two=lambda k: (10, 0) if k < 20 else (20, 0),
    )
    found = detect_stopped_instances("cat", crashed, _at(30), FINE)
    assert [(a.subject, a.signal, a.instance, a.start, a.end) for a in found] == [
        ("cat", "instance_stopped", "cat-1", _at(20), _at(39))
    ]
    # Its share was half: one success per sibling success, 20 buckets of 20.
    assert found[0].expected == pytest.approx(400.0) and found[0].score == 20.0

    def until(k: int) -> dict[str, list[Point]]:
        return {n: [p for p in v if p.minute < _at(k)] for n, v in crashed.items()}

    # Three silent buckets (15 s) are not enough, whatever the count (a starved replica comes
    # back within three); the fourth, 20 s after the crash, is.
    assert detect_stopped_instances("cat", until(23), _at(20), FINE) == []
    assert [a.end for a in detect_stopped_instances("cat", until(24), _at(20), FINE)] == [_at(23)]


def test_a_quiet_service_is_judged_once_the_expected_successes_add_up() -> None:
    # 2 successes per replica and bucket: after the crash, 4 per bucket to cat-2, 4 expected
    # per bucket for cat-1: 30 after 8 buckets, not after 4.
    quiet = _replicas(
        40, one=lambda k: (2, 0) if k < 20 else (0, 0), two=lambda k: (2, 0) if k < 20 else (4, 0)
    )
    ends = [a.end for a in detect_stopped_instances("cat", quiet, _at(20), FINE)]
    assert ends == [_at(39)]
    early = {n: [p for p in v if p.minute < _at(27)] for n, v in quiet.items()}
    assert detect_stopped_instances("cat", early, _at(20), FINE) == []
    later = {n: [p for p in v if p.minute < _at(28)] for n, v in quiet.items()}
    assert len(detect_stopped_instances("cat", later, _at(20), FINE)) == 1


def test_a_starved_slow_or_unused_replica_or_a_lone_instance_is_not_stopped() -> None:
    # cat-1 gets nothing for 3 buckets now and then (the balancer starving it), then serves:
    # 90 successes expected each time, but not 4 buckets long.
    starved = _replicas(
        60,
        one=lambda k: (0, 0) if k % 20 < 3 else (15, 0),
        two=lambda k: (30, 0) if k % 20 < 3 else (15, 0),
    )
    assert detect_stopped_instances("cat", starved, _at(0), FINE) == []
    # A slower replica the balancer sends less to, still some in every bucket.
    slower = _replicas(60, one=lambda k: (1, 0), two=lambda k: (30, 0))
    assert detect_stopped_instances("cat", slower, _at(0), FINE) == []
    # A replica that was barely used (1 in 31 before, less than half an equal share) says
    # nothing by going silent, however long.
    unused = _replicas(60, one=lambda k: (1, 0) if k < 20 else (0, 0), two=lambda k: (30, 0))
    assert detect_stopped_instances("cat", unused, _at(0), FINE) == []
    # No traffic at all (every caller stops at once, or a scale-down to zero): no sibling
    # serves, so nothing is judged.
    stopped = _replicas(
        40, one=lambda k: (10, 0) if k < 10 else (0, 0), two=lambda k: (10, 0) if k < 10 else (0, 0)
    )
    assert detect_stopped_instances("cat", stopped, _at(0), FINE) == []
    # A replica that never served (a new one warming up) has no baseline to stop from.
    fresh = _replicas(40, one=lambda k: (0, 0), two=lambda k: (20, 0))
    assert detect_stopped_instances("cat", fresh, _at(0), FINE) == []
    lone = {"cat-1": [Point(_at(k), 10, 0, 0.0) for k in range(10)]}
    assert detect_stopped_instances("cat", lone, _at(0), FINE) == []
    # The silence ended before the evaluated window: reported then, not again.
    old = _replicas(60, one=lambda k: (0, 0) if 10 <= k < 20 else (10, 0), two=lambda k: (10, 0))
    assert len(detect_stopped_instances("cat", old, _at(0), FINE)) == 1
    assert detect_stopped_instances("cat", old, _at(30), FINE) == []
    with pytest.raises(ValueError, match="stopped_min_points"):
        DetectorConfig(stopped_min_points=0)
    with pytest.raises(ValueError, match="stopped_min_share"):
        DetectorConfig(stopped_min_share=1.5)


def test_three_replicas_expect_the_silent_ones_share_of_the_siblings_successes() -> None:
    # cat-3 crashes; cat-1 and cat-2 serve 10 each per bucket after it: 10 expected per bucket
    # (its share was a third: half of what the two siblings serve), 40 after 4 buckets.
    points = {
        name: [
            Point(_at(k), n, 0, 0.0)
            for k in range(24)
            if (n := (0 if name == "cat-3" and k >= 20 else (10 if k >= 20 else 6)))
        ]
        for name in ("cat-1", "cat-2", "cat-3")
    }
    found = detect_stopped_instances("cat", points, _at(20), FINE)
    assert [(a.instance, a.start, a.end) for a in found] == [("cat-3", _at(20), _at(23))]
    assert found[0].expected == pytest.approx(40.0)


def test_a_replica_failing_every_request_counts_as_answering_nothing() -> None:
    failing = _replicas(40, one=lambda k: (10, 0) if k < 20 else (10, 10), two=lambda k: (10, 0))
    found = detect_stopped_instances("cat", failing, _at(20), FINE)
    assert [(a.instance, a.start) for a in found] == [("cat-1", _at(20))]


def test_a_silent_replica_whose_sidecar_reported_its_app_unreachable_is_stopped_sooner() -> None:
    # cat-1 crashes in bucket 20: its sidecar's connection refused reported in that bucket
    # (a few requests still answered in it), silent from bucket 21 on.
    crashed = _replicas(
        40,
        one=lambda k: (10, 0) if k < 20 else ((4, 2) if k == 20 else (0, 0)),
        two=lambda k: (10, 0) if k < 20 else (20, 0),
    )

    def until(k: int) -> dict[str, list[Point]]:
        return {n: [p for p in v if p.minute < _at(k)] for n, v in crashed.items()}

    refused = {"cat-1": {_at(20)}}
    # Two silent buckets (21, 22) with the report: stopped; without it, two are not enough.
    found = detect_stopped_instances("cat", until(23), _at(20), FINE, refused)
    assert [(a.instance, a.start, a.end, a.score) for a in found] == [
        ("cat-1", _at(21), _at(22), 2.0)
    ]
    assert detect_stopped_instances("cat", until(23), _at(20), FINE) == []
    assert detect_stopped_instances("cat", until(22), _at(20), FINE, refused) == []
    # A report long before the silence, or one for the sibling, is no evidence for this one.
    assert detect_stopped_instances("cat", until(23), _at(20), FINE, {"cat-1": {_at(5)}}) == []
    assert detect_stopped_instances("cat", until(23), _at(20), FINE, {"cat-2": {_at(20)}}) == []
    # The other conditions stay: a barely used replica says nothing, report or not.
    unused = _replicas(30, one=lambda k: (1, 0) if k < 20 else (0, 0), two=lambda k: (30, 0))
    assert detect_stopped_instances("cat", unused, _at(0), FINE, {"cat-1": {_at(20)}}) == []
    with pytest.raises(ValueError, match="stopped_unreachable_points"):
        DetectorConfig(stopped_unreachable_points=0)
