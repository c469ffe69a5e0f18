from __future__ import annotations

from sidecar.peers import LocalAddresses
from tests.conftest import address_of_this_host


def test_loopback_and_this_hosts_addresses_are_local_others_are_not() -> None:
    local = LocalAddresses()
    assert local.includes("127.0.0.1") and local.includes("127.3.4.5") and local.includes("::1")
    assert local.includes("::ffff:127.0.0.1")  # (a dual-stack listener's peer)
    own = address_of_this_host()
    if own is not None:
        assert local.includes(own) and local.includes(f"::ffff:{own}")
    for foreign in ("203.0.113.9", "2001:db8::9", "0.0.0.0", "224.0.0.1", "", "not-an-ip"):
        assert not local.includes(foreign), foreign


def test_answers_are_cached_within_a_bound() -> None:
    local = LocalAddresses(max_cached=4)
    for n in range(10):
        assert not local.includes(f"203.0.113.{n}")
    assert len(local._cache) <= 4
