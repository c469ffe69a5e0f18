"""The corpus evaluation on constructed spans: buckets, sliding detection, matching, the table."""

from __future__ import annotations

from analytics.rca import SpanRow
from bench.rca.demo_corpus import (
    Fault,
    Run,
    Totals,
    bucket_points,
    evaluate_run,
    report,
    sliding_detection,
)
from bench.rca.trainticket import leave_one_out

S = 1_000_000_000
T0 = 1_700_000_000 * S


def _calls(
    seconds: int, *, slow_from: int = 10**9, slow_to: int = 10**9, fail_from: int = 10**9
) -> list[SpanRow]:
    """frontend calls catalog 20 times a second (client span + server span per call)."""
    out = []
    for sec in range(seconds):
        for i in range(20):
            start = T0 + sec * S + i * (S // 20)
            slow = slow_from <= sec < slow_to
            ms = (60 if slow else 10) + i % 3
            failed = fail_from <= sec < slow_to and i % 2 == 0
            trace = f"t{sec}-{i}"
            out.append(
                SpanRow(
                    trace,
                    "c",
                    "r",
                    "frontend",
                    "GET /catalog",
                    start,
                    ms * 10**6 + 10**6,
                    failed,
                    "catalog",
                )
            )
            out.append(SpanRow(trace, "s", "c", "catalog", "GET /items", start, ms * 10**6, failed))
            out.append(SpanRow(trace, "r", "", "frontend", "GET /", start, ms * 10**6 + 2 * 10**6))
    return out


def test_bucket_points_are_client_spans_per_second_as_minutes() -> None:
    points = bucket_points(_calls(3, slow_from=1, slow_to=2), T0, S)
    assert [(p.caller, p.callee, p.stats.requests) for p in points] == [
        ("frontend", "catalog", 20)
    ] * 3
    assert [(p.minute - points[0].minute).total_seconds() for p in points] == [0, 60, 120]
    assert points[1].stats.p50_ms == 62.0 and points[0].stats.p50_ms == 12.0


def test_sliding_detection_finds_a_latency_shift_after_it_starts_not_before() -> None:
    spans = _calls(20, slow_from=10, slow_to=16)
    detection = sliding_detection(spans, T0, T0 + 20 * S)
    assert detection.incidents, "the shift is detected"
    first = min(detection.first_seen.values())
    assert first == 11  # bucket 10 is complete at step 11: nothing fires earlier
    assert all(set(a.services) <= {"frontend", "catalog"} for i in detection.incidents
               for a in i.anomalies)  # fmt: skip


def test_evaluate_run_matches_incidents_and_ranks_the_target() -> None:
    spans = _calls(20, slow_from=10, slow_to=16, fail_from=10)
    fault = Fault("error_burst", "catalog", T0 + 10 * S, T0 + 16 * S)
    run = Run("r1", "shop", T0, T0 + 20 * S, (fault,), (("frontend", "catalog"),), spans)
    quiet = Run("r2", "shop", T0, T0 + 20 * S, (), (("frontend", "catalog"),), _calls(20))
    totals = Totals()
    evaluate_run(run, totals, verbose=False)
    evaluate_run(quiet, totals, verbose=False)
    (result,) = totals.faults
    assert result.ranks["meshlens"] == 1
    assert all(t is not None and 0 < t <= 2.0 for t in result.detected_after_s.values())
    for d in totals.detection.values():
        assert d.true_incidents >= 1 and d.false_incidents == 0
    assert totals.fault_free_s == 30.0 and totals.runs == 2
    table = report(totals)
    assert "error_burst" in table and "precision 100.0%" in table


def test_leave_one_out_picks_the_variant_best_on_the_other_cases() -> None:
    ranks = [
        {"meshlens": 1, "meshlens-sum": 2},
        {"meshlens": 1, "meshlens-sum": 2},
        {"meshlens": 4, "meshlens-sum": 1},
    ]
    # Case 0 held out: one top-1 each on the others, meshlens-sum has more top-3 -> its rank 2.
    # Case 2 held out: meshlens has both top-1s -> its rank 4.
    assert leave_one_out(ranks, ("meshlens", "meshlens-sum")) == [2, 2, 4]
    # With the held-out case's own merit removed, the other variant may win.
    assert leave_one_out(
        [{"meshlens": 1, "meshlens-sum": 5}, {"meshlens": 5, "meshlens-sum": 1}],
        ("meshlens", "meshlens-sum"),
    ) == [5, 5]
