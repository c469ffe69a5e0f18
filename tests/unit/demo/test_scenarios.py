from __future__ import annotations

import pytest

from demo.faults import FaultKind
from demo.scenarios import ALIASES, Scenario, demo_schedule, evaluation_cases, parse_scenario
from demo.topology import CHAIN, SHOP


def test_every_alias_parses() -> None:
    for alias in ALIASES:
        assert parse_scenario(alias, seed=1).name == ALIASES[alias]


def test_a_scenario_is_fixed_by_name_seed_and_duration() -> None:
    a = parse_scenario("shop/latency", seed=5, duration_s=30)
    b = parse_scenario("shop/latency", seed=5, duration_s=30)
    assert a == b and a.fault() == b.fault()
    assert a.service != "frontend"  # the entry is never the target
    fault = a.fault()
    assert 9.0 <= fault.start_s <= 12.0 and fault.duration_s == pytest.approx(10.5)


def test_the_seed_changes_the_fault_start() -> None:
    starts = {parse_scenario("quick", seed=s).fault().start_s for s in range(10)}
    assert len(starts) > 1


def test_a_crash_always_names_one_instance() -> None:
    scenario = parse_scenario("shop/crash/catalog", seed=3)
    assert scenario.instance in ("catalog-1", "catalog-2")
    assert scenario.fault().instance == scenario.instance


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("shop", "expected topology/kind"),
        ("shop/flood", "unknown fault kind"),
        ("shop/latency/ghost", "no service 'ghost'"),
        ("mars/latency", "unknown topology"),
        ("shop/latency/catalog/catalog-9", "no instance"),
        ("shop/abort/frontend", "has none"),
    ],
)
def test_bad_scenario_names_are_explained(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scenario(name, seed=1)


def test_duration_has_a_floor() -> None:
    with pytest.raises(ValueError, match="duration"):
        Scenario("shop", FaultKind.LATENCY, "cart", None, 1, duration_s=3)


def test_evaluation_cases_cover_six_kinds_two_topologies_and_sixty_cases() -> None:
    cases = evaluation_cases()
    assert len(cases) >= 60
    assert {c.kind for c in cases} == set(FaultKind)
    assert {c.topology for c in cases} == {"shop", "chain"}
    assert len({(c.name, c.seed) for c in cases}) == len(cases)
    assert len(evaluation_cases(seeds=(1, 2))) == 2 * len(cases)


def test_demo_schedule_has_one_fault_of_each_kind() -> None:
    for topology in (SHOP, CHAIN):
        schedule = demo_schedule(topology, fault_s=7)
        assert {f.kind for f in schedule} == set(FaultKind)
        assert all(f.duration_s == 7 for f in schedule)
    crash = next(f for f in demo_schedule(SHOP) if f.kind is FaultKind.CRASH)
    assert crash.instance == "catalog-2"  # catalog-1 takes over
