from __future__ import annotations

import pytest

from analytics.controlplane.errors import NotFound
from analytics.controlplane.registry import Registration, Registry
from tests.unit.analytics.controlplane.helpers import ManualClock


def reg(instance: str, service: str = "orders", **extra: object) -> Registration:
    return Registration(
        namespace="default",
        service=service,
        instance=instance,
        address="10.0.0.1",
        ports={"inbound": 15006},
        **extra,  # type: ignore[arg-type]
    )


def test_instances_without_heartbeat_leave_the_endpoint_set_when_the_lease_ends() -> None:
    clock = ManualClock(0.0)
    registry = Registry(6.0, clock=clock, wall_clock=clock)
    registry.register(reg("a"))
    registry.register(reg("b"))

    clock.advance(4.0)
    registry.heartbeat("a")
    clock.advance(3.0)  # b's lease (6 s) is over, a's runs until 10 s

    assert [e.instance for e in registry.endpoints("orders")] == ["a"]
    revision = registry.revision
    assert [r.instance for r in registry.expire()] == ["b"]
    assert registry.revision == revision + 1
    with pytest.raises(NotFound):
        registry.heartbeat("b")


def test_revision_changes_only_when_the_endpoint_set_changes() -> None:
    clock = ManualClock(0.0)
    registry = Registry(6.0, clock=clock, wall_clock=clock)
    registry.register(reg("a"))
    revision = registry.revision

    registry.register(reg("a"))  # same registration again: a restart that changed nothing
    registry.heartbeat("a")
    assert registry.revision == revision
    registry.register(reg("a", labels={"version": "v2"}))
    assert registry.revision == revision + 1
    registry.deregister("a")
    assert registry.revision == revision + 2
    assert registry.endpoints("orders") == []


def test_ack_clears_an_older_nack_and_reregistration_keeps_fleet_state() -> None:
    clock = ManualClock(0.0)
    registry = Registry(6.0, clock=clock, wall_clock=clock)
    registry.register(reg("a"))
    registry.record_ack("a", 1)
    registry.record_nack("a", 2, "bad timeout")

    state = registry.register(reg("a"))
    assert (state.acked_version, state.nack and state.nack.version) == (1, 2)
    assert registry.record_ack("a", 3).nack is None


def test_registration_lists_every_problem() -> None:
    with pytest.raises(ValueError) as info:
        Registration(
            namespace="Default",
            service="Orders",
            instance="",
            address="",
            ports={"inbound": 0},
            upstreams=("Bad",),
        )
    message = str(info.value)
    for fragment in ("namespace", "service", "instance", "address", "port", "upstream"):
        assert fragment in message


def test_late_replies_about_older_versions_do_not_move_the_fleet_view_back() -> None:
    clock = ManualClock(0.0)
    registry = Registry(6.0, clock=clock, wall_clock=clock)
    registry.register(reg("a"))
    registry.record_ack("a", 3)

    registry.record_ack("a", 2)
    state = registry.record_nack("a", 1, "late")

    assert (state.acked_version, state.nack) == (3, None)
