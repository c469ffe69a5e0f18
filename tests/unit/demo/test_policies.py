from __future__ import annotations

from pathlib import Path

from demo.policies import FilePolicies, sidecar_config
from demo.supervisor import free_ports
from demo.topology import SHOP
from sidecar.config import load_config, parse_config

ENDPOINTS = {
    s.name: [(name, 20000 + n) for n, name in enumerate(s.instance_ids())] for s in SHOP.services
}


def test_every_shop_policy_is_a_valid_sidecar_document() -> None:
    for service in SHOP.services:
        document = sidecar_config(SHOP, service.name, {}, ENDPOINTS)
        config = parse_config(document)
        assert set(document["upstreams"]) == set(SHOP.callees(service.name))
        assert config is not None


def test_an_abort_adds_a_fault_route_for_that_callee_only() -> None:
    document = sidecar_config(SHOP, "checkout", {"payment": (503, 40.0)})
    [route] = document["routes"]
    assert route["match"] == {"hosts": ["payment"]}
    assert route["fault"] == {"abort": {"status": 503, "percent": 40.0}}
    assert "endpoints" not in document["upstreams"]["payment"]  # the control plane fills them
    parse_config(document)


async def test_file_policies_write_each_callers_file_and_notify_its_sidecar(tmp_path: Path) -> None:
    paths = {
        "checkout-1": ("checkout", tmp_path / "checkout-1.json"),
        "cart-1": ("cart", tmp_path / "cart-1.json"),
    }
    notified: list[str] = []
    policies = FilePolicies(SHOP, paths, ENDPOINTS, notified.append)
    await policies.publish({"checkout"}, {"payment": (503, 50.0)}, "test")
    assert notified == ["checkout-1"] and not (tmp_path / "cart-1.json").exists()
    config = load_config(str(tmp_path / "checkout-1.json"))
    assert config is not None
    assert '"version": "demo-1"' in (tmp_path / "checkout-1.json").read_text()


def test_free_ports_are_distinct() -> None:
    ports = free_ports(32)
    assert len(set(ports)) == 32 and all(0 < p < 65536 for p in ports)


def test_strict_mtls_keeps_only_the_entry_service_permissive_through_its_policy() -> None:
    documents = {s.name: sidecar_config(SHOP, s.name, {}, mtls="strict") for s in SHOP.services}

    permissive = {name for name, doc in documents.items() if "mtls" in doc}
    assert permissive == {SHOP.entry}
    assert parse_config(documents[SHOP.entry]).mtls_mode == "permissive"
    assert all("mtls" not in sidecar_config(SHOP, s.name, {}) for s in SHOP.services)
