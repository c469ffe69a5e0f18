"""Grouping anomalies into incidents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics.anomalies import Anomaly, group_incidents

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _a(subject: str, start: int, end: int, signal: str = "latency_p99") -> Anomaly:
    return Anomaly(
        subject, signal, T0 + timedelta(minutes=start), T0 + timedelta(minutes=end), 1.0, 0.0, 9.0
    )


def test_overlapping_and_near_anomalies_form_one_incident_and_far_ones_another() -> None:
    incidents = group_incidents(
        [
            _a("web->db", 0, 3),
            _a("db", 2, 4, "error_ratio"),
            _a("api->cache", 6, 6),
            _a("x", 20, 21),
        ]
    )

    assert [(i.start, i.end) for i in incidents] == [
        (T0, T0 + timedelta(minutes=6)),
        (T0 + timedelta(minutes=20), T0 + timedelta(minutes=21)),
    ]
    assert incidents[0].services == ("api", "cache", "db", "web")
    assert "error_ratio" in incidents[0].summary


def test_incident_ids_are_stable_for_the_same_first_anomaly() -> None:
    first = group_incidents([_a("web->db", 0, 3)])
    grown = group_incidents([_a("web->db", 0, 5), _a("db", 4, 6)])
    assert first[0].id == grown[0].id


def test_negative_gap_is_rejected() -> None:
    with pytest.raises(ValueError):
        group_incidents([], gap_minutes=-1)
