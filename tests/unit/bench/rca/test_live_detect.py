"""The live detection bench's evaluation on constructed log lines and ground truth."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bench.rca.live_detect import evaluate_run, found_anomalies, opened_incidents, report

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


def _found(at: float, start: float, subject: str) -> str:
    record = {"ts": _iso(at), "msg": "anomaly found", "subject": subject, "signal": "latency_p99"}
    return json.dumps({**record, "start": _iso(start)})


def _opened(at: float, start: float, services: list[str], causes: list[str]) -> str:
    record = {"ts": _iso(at), "msg": "incident opened", "start": _iso(start)}
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
