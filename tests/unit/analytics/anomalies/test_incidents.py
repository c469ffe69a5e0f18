"""Grouping anomalies into incidents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics.anomalies import Anomaly, ServiceMap, group_incidents

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


# A shop (frontend -> cart, frontend -> catalog -> inventory) and, unconnected, a batch job.
SHOP = [("frontend", "cart"), ("frontend", "catalog"), ("catalog", "inventory")]
EDGES = [*SHOP, ("batch", "store")]


def test_with_a_service_map_unrelated_anomalies_at_the_same_time_are_separate_incidents() -> None:
    blip = _a("batch->store", 0, 1)
    fault = _a("catalog", 1, 4, "error_ratio")
    incidents = group_incidents([blip, fault, _a("frontend->catalog", 1, 4, "error_ratio")])
    assert len(incidents) == 1  # by time alone the fault joins the blip's incident

    split = group_incidents(
        [blip, fault, _a("frontend->catalog", 1, 4, "error_ratio")], edges=EDGES
    )

    assert [i.services for i in split] == [("batch", "store"), ("catalog", "frontend")]
    # The fault's incident is named by its own first anomaly, not the blip's.
    assert split[1].id == group_incidents([fault], edges=EDGES)[0].id
    assert split[1].start == T0 + timedelta(minutes=1)


def test_a_fault_spreading_to_callers_within_two_hops_stays_one_incident() -> None:
    spread = [
        _a("inventory", 0, 3),
        _a("catalog->inventory", 0, 3),
        _a("frontend->catalog", 1, 3),
        _a("cart", 2, 3),  # frontend's other callee: two hops from catalog
    ]
    incidents = group_incidents(spread, edges=SHOP)
    assert len(incidents) == 1
    assert incidents[0].services == ("cart", "catalog", "frontend", "inventory")


def test_neighbours_too_far_apart_in_the_graph_or_in_time_are_refused() -> None:
    # cart is three hops from inventory (cart - frontend - catalog - inventory).
    far = group_incidents([_a("inventory", 0, 3), _a("cart", 1, 2)], edges=SHOP)
    assert [i.services for i in far] == [("inventory",), ("cart",)]
    one_hop = group_incidents([_a("inventory", 0, 3), _a("frontend", 1, 2)], edges=SHOP, hops=1)
    assert len(one_hop) == 2
    later = group_incidents([_a("inventory", 0, 3), _a("catalog", 9, 10)], edges=SHOP)
    assert len(later) == 2
    # A service the map does not know joins only incidents that name it.
    unknown = group_incidents([_a("inventory", 0, 3), _a("ghost", 1, 2)], edges=SHOP)
    assert len(unknown) == 2
    with pytest.raises(ValueError, match="hops"):
        group_incidents([], edges=SHOP, hops=-1)


def test_service_map_distances_are_undirected_and_bounded() -> None:
    graph = ServiceMap(EDGES)
    assert graph.near("inventory", 0) == {"inventory"}
    assert graph.near("inventory", 1) == {"inventory", "catalog"}
    assert graph.near("inventory", 2) == {"inventory", "catalog", "frontend"}
    assert graph.near("store", 5) == {"store", "batch"}
    assert graph.near("nowhere", 2) == {"nowhere"}
