from __future__ import annotations

import pytest

from demo.topology import CHAIN, SHOP, Call, Journey, Operation, Service, Topology, get_topology


def test_shop_has_fan_out_a_shared_dependency_a_slow_path_and_two_catalog_instances() -> None:
    assert len(SHOP.services) >= 6
    assert SHOP.callees("frontend") == ("cart", "catalog", "checkout")
    assert SHOP.callers("inventory") == ("catalog", "checkout")
    assert SHOP.service("catalog").instance_ids() == ("catalog-1", "catalog-2")
    shipping = SHOP.service("shipping").operations[0]
    assert shipping.work_ms > 5 * SHOP.service("cart").operations[0].work_ms
    checkout = SHOP.service("checkout").operations[0]
    assert len(checkout.stages[0]) == 2  # payment and inventory in parallel


def test_chain_is_a_second_topology_with_a_deep_path() -> None:
    assert get_topology("chain") is CHAIN
    assert len(CHAIN.services) >= 6
    assert ("pricing", "rates") in CHAIN.edges() and ("rates", "ledger") in CHAIN.edges()


def test_unknown_topology_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="shop"):
        get_topology("nope")


def _svc(name: str, *calls: Call) -> Service:
    return Service(name, (Operation("/x", stages=(calls,) if calls else ()),))


def test_a_call_to_an_unknown_operation_is_rejected() -> None:
    with pytest.raises(ValueError, match="calls unknown b GET /y"):
        Topology("t", "a", (_svc("a", Call("b", "/y")), _svc("b")), (Journey("j", "/x"),))


def test_a_cycle_is_rejected() -> None:
    with pytest.raises(ValueError, match="cycle"):
        Topology(
            "t",
            "a",
            (_svc("a", Call("b", "/x")), _svc("b", Call("a", "/x"))),
            (Journey("j", "/x"),),
        )


def test_a_journey_must_exist_at_the_entry_service() -> None:
    with pytest.raises(ValueError, match="journey j: a has no /missing"):
        Topology("t", "a", (_svc("a"),), (Journey("j", "/missing"),))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"path": "x"}, "start with"), ({"path": "/x", "error_rate": 2.0}, "error_rate")],
)
def test_operation_checks_its_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Operation(**kwargs)  # type: ignore[arg-type]
