"""The live detection bench's evaluation on constructed log lines and ground truth."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bench.rca.live_detect import (
    DESIGNED_ON,
    evaluate_run,
    found_anomalies,
    holdout_cases,
    opened_incidents,
    report,
)

S = 1_000_000_000
T0 = 1_800_000_000  # seconds


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _truth(*faults: tuple[str, str, float, float]) -> dict[str, object]:
    return {
        "load_started_ns": T0 * S,
        "ended_ns": (T0 + 300) * S,
        "edges": [["frontend", "catalog"], ["catalog", "db"]],
        "faults": [
            {"kind": k, "service": s, "start_ns": int(a * S), "end_ns": int(b * S)}
            for k, s, a, b in faults
        ],
    }


def _found(at: float, start: float, subject: str, signal: str = "error_ratio") -> str:
    record = {"ts": _iso(at), "msg": "anomaly found", "subject": subject, "signal": signal}
    return json.dumps({**record, "start": _iso(start)})


def _opened(
    at: float,
    start: float,
    services: list[str],
    causes: list[str],
    anomalies: list[tuple[str, float]] | None = None,
) -> str:
    record = {"ts": _iso(at), "msg": "incident opened", "start": _iso(start)}
    if anomalies is not None:
        record["anomalies"] = [
            {"subject": subject, "signal": "error_ratio", "start": _iso(t)}
            for subject, t in anomalies
        ]
    return json.dumps({**record, "services": services, "root_causes": causes})


def test_time_to_detect_is_the_first_matching_anomaly_and_other_incidents_are_false() -> None:
    fault = T0 + 100
    lines = [
        '{"ts": "2027-01-15T08:00:00Z", "msg": "something else"}',
        _opened(T0 + 40, T0 + 30, ["frontend", "search"], ["search"]),  # before the fault: false
        _found(T0 + 43, T0 + 30, "frontend->search"),
        _found(fault + 24, fault, "frontend->catalog"),  # a caller of the target: matches
        _found(fault + 30, fault, "db"),  # a callee only: does not match
        _opened(fault + 25, fault, ["catalog", "frontend"], ["catalog", "frontend"]),
    ]
    truth = _truth(("latency", "catalog", fault, fault + 100))

    out = evaluate_run("run", truth, opened_incidents(lines), found_anomalies(lines))

    assert out.kind == "latency" and out.detect_s == 24.0 and out.top1
    assert out.false_incidents == 1 and out.fault_free_s == 200.0
    missed = evaluate_run("run", truth, opened_incidents(lines[:3]), found_anomalies(lines[:3]))
    assert missed.detect_s is None and not missed.top1 and missed.false_incidents == 1
    table = report([out, missed])
    assert "latency         2      50%" in table and "  1/2 " in table
    assert "false incidents: 2 in 400 s" in table


def test_a_fault_free_run_counts_every_incident_as_false() -> None:
    lines = [_opened(T0 + 50, T0 + 40, ["catalog"], ["catalog"])]
    out = evaluate_run("nofault", _truth(), opened_incidents(lines), found_anomalies(lines))
    assert out.kind == "nofault" and out.detect_s is None
    assert out.false_incidents == 1 and out.fault_free_s == 300.0


def test_an_incident_matches_by_the_anomalies_it_was_opened_with() -> None:
    fault = T0 + 100
    truth = _truth(("error_burst", "catalog", fault, fault + 100))
    # Opened in the round that first saw both the errors (5 s bucket, 3 s before the fault) and
    # a minute-path burn rate whose minute began 50 s before it: the fault's own incident.
    own = _opened(
        fault + 10,
        fault - 50,
        ["catalog"],
        ["catalog"],
        [("catalog", fault - 50), ("catalog", fault - 3)],
    )
    out = evaluate_run("run", truth, opened_incidents([own]), [])
    assert out.detect_s == 10.0 and out.top1 and out.false_incidents == 0
    # Judged by its earliest start, as an engine that logs no anomalies is: false.
    old = _opened(fault + 10, fault - 50, ["catalog"], ["catalog"])
    assert evaluate_run("run", truth, opened_incidents([old]), []).false_incidents == 1
    # Opened before the fault by a rise that began 28 s before it: false, however it grows.
    early = _opened(fault - 5, fault - 28, ["catalog"], ["catalog"], [("catalog", fault - 28)])
    out = evaluate_run("run", truth, opened_incidents([early]), [])
    assert out.false_incidents == 1 and out.detect_s is None
    # An anomaly of the incident names the service, another one the time: no match.
    split = _opened(
        fault + 10, fault - 3, ["catalog", "x"], ["x"], [("x", fault - 3), ("catalog", fault - 40)]
    )
    assert evaluate_run("run", truth, opened_incidents([split]), []).false_incidents == 1


def test_a_tail_only_anomaly_detects_only_through_an_incident() -> None:
    fault = T0 + 100
    truth = _truth(("latency", "catalog", fault, fault + 100))
    tail = _found(fault + 12, fault, "catalog", "latency_p99")
    out = evaluate_run("run", truth, [], found_anomalies([tail]))
    assert out.detect_s is None
    lines = [tail, _opened(fault + 70, fault, ["catalog"], ["catalog"], [("catalog", fault)])]
    out = evaluate_run("run", truth, opened_incidents(lines), found_anomalies(lines))
    assert out.detect_s == 70.0 and out.top1


def test_holdout_cases_avoid_the_recorded_targets_and_cover_every_kind_and_topology() -> None:
    cases = holdout_cases(2, 8, 300.0)
    assert len(cases) == 8 and len({c.name for c in cases}) == 8
    assert all(c.seed == 2 and c.duration_s == 300.0 for c in cases)
    assert all((c.topology, str(c.kind), c.service) not in DESIGNED_ON for c in cases)
    kinds = {"latency", "error_burst", "abort", "crash", "cpu", "reset"}
    assert {str(c.kind) for c in cases[:6]} == kinds
    assert {c.topology for c in cases} == {"shop", "chain"}
    assert sorted(c.topology for c in cases).count("shop") == 4
    # Deterministic per seed, different across seeds.
    assert [c.name for c in holdout_cases(2, 8, 300.0)] == [c.name for c in cases]
    assert [c.name for c in holdout_cases(3, 8, 300.0)] != [c.name for c in cases]
    assert holdout_cases(2, 0, 300.0) == []
    with pytest.raises(ValueError, match="count"):
        holdout_cases(2, -1, 300.0)


def test_holdout_falls_back_to_a_recorded_target_at_the_new_seed_when_none_is_left() -> None:
    every = {(c.topology, str(c.kind), c.service) for c in holdout_cases(1, 1000, 300.0)}
    assert len(every) == 66  # all cases, each once
    # Every shop target but one seen: shop's kinds come from that one first, then seen ones.
    seen = frozenset(k for k in every if not (k[0] == "shop" and k[2] == "cart"))
    cases = holdout_cases(2, 12, 300.0, designed_on=seen)
    shop = [c for c in cases if c.topology == "shop"]
    assert len(shop) == 6 and {c.service for c in shop} == {"cart"}
    assert {str(c.kind) for c in shop} == {
        "latency",
        "error_burst",
        "abort",
        "crash",
        "cpu",
        "reset",
    }
    everything = frozenset(every)
    fallback = holdout_cases(2, 6, 300.0, designed_on=everything)
    assert len(fallback) == 6 and all(c.seed == 2 for c in fallback)
