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


# Fine-path anomalies: 5 s buckets from T0 (minute granularity above is the minute path's).
def _f(subject: str, start: int, end: int, signal: str = "latency_p99") -> Anomaly:
    return Anomaly(
        subject, signal, T0 + timedelta(seconds=start), T0 + timedelta(seconds=end), 1.0, 0.0, 9.0
    )


TAIL = timedelta(minutes=1)
# checkout and cart both called by frontend: within two hops of each other.
SHOP2 = [*SHOP, ("frontend", "checkout"), ("checkout", "inventory")]


def test_a_short_tail_only_rise_opens_no_incident_on_its_own() -> None:
    blip = _f("checkout->inventory", 0, 35)  # 40 s of p99: the buckets 0..35
    assert group_incidents([blip], edges=SHOP2, tail_min=TAIL) == []
    # Without the rule (the default) it is an incident, as before.
    assert len(group_incidents([blip], edges=SHOP2)) == 1


def test_a_tail_only_rise_that_lasts_tail_min_opens_one() -> None:
    long = _f("checkout->inventory", 0, 60)
    incidents = group_incidents([long], edges=SHOP2, tail_min=TAIL)
    assert [i.services for i in incidents] == [("checkout", "inventory")]
    # ...and a p99 run one bucket shorter does not.
    assert group_incidents([_f("checkout->inventory", 0, 55)], edges=SHOP2, tail_min=TAIL) == []


def test_a_fault_after_a_tail_rise_in_its_neighbourhood_opens_its_own_incident() -> None:
    # The recorded shop/error_burst/cart shape: checkout->inventory p99 for 20 s from 18 s
    # before the fault, then frontend->cart errors (frontend is one hop from checkout).
    blip = _f("checkout->inventory", -20, -5)
    fault = [_f("frontend->cart", 0, 30, "error_ratio"), _f("cart", 0, 30, "error_ratio")]
    incidents = group_incidents([blip, *fault], edges=SHOP2, tail_min=TAIL)
    assert [(i.start, i.services) for i in incidents] == [(T0, ("cart", "frontend"))]
    assert incidents[0].id == group_incidents(fault, edges=SHOP2)[0].id
    # Before: the fault joined the blip's incident, which started 20 s before it.
    joined = group_incidents([blip, *fault], edges=SHOP2)
    assert [i.start for i in joined] == [T0 - timedelta(seconds=20)]


def test_a_tail_rise_on_the_faulty_service_itself_does_not_move_the_incident_start() -> None:
    # chain/error_burst/auth: auth's p99 for 40 s from 28 s before its error burst.
    tail = _f("auth", -28, 7)
    errors = _f("auth", -3, 60, "error_ratio")
    incidents = group_incidents([tail, errors], edges=[("gateway", "auth")], tail_min=TAIL)
    assert [(i.start, [a.signal for a in i.anomalies]) for i in incidents] == [
        (T0 - timedelta(seconds=3), ["error_ratio"])
    ]


def test_a_short_tail_rise_joins_an_incident_a_stronger_signal_opened() -> None:
    errors = _f("catalog", 0, 30, "error_ratio")
    tail = _f("frontend->catalog", 10, 25)
    incidents = group_incidents([errors, tail], edges=SHOP2, tail_min=TAIL)
    assert len(incidents) == 1
    assert [a.signal for a in incidents[0].anomalies] == ["error_ratio", "latency_p99"]
    # Other signals open at once, whatever their length (the median: one bucket).
    median = group_incidents([_f("cart", 0, 0, "latency_p50")], edges=SHOP2, tail_min=TAIL)
    assert len(median) == 1
    with pytest.raises(ValueError, match="tail_min"):
        group_incidents([], tail_min=-TAIL)
