"""Whether a connection comes from this host (its network namespace): the outbound listener,
and the admin's state-changing endpoints, serve only such peers.

Deployed, the sidecar listens on 0.0.0.0 (`--listen`, as the Kubernetes injection and the
compose file do: the capture rules and other containers of the pod reach it there), and the
capture rules redirect only the app's ports inbound. So the outbound listener was reachable
on the pod's address from any other pod: a forward proxy that calls mesh services with this
pod's mTLS identity (past authz rules on it) and reaches whatever the pod can; and anyone who
could reach the admin port could POST /drain and stop the sidecar. (Istio redirects every
inbound port and binds the admin to 127.0.0.1.) A peer is this host's when its address is
loopback or one this host can bind: exact, for every interface, no list to keep.
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["LocalAddresses"]


class LocalAddresses:
    """`includes(ip)`: `ip` is an address of this host. Answers are cached (bounded: cleared
    when `max_cached` distinct addresses were asked)."""

    def __init__(self, max_cached: int = 1024) -> None:
        self._cache: dict[str, bool] = {}
        self._max = max_cached

    def includes(self, ip: str) -> bool:
        known = self._cache.get(ip)
        if known is None:
            known = _is_local(ip)
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[ip] = known
        return known


def _is_local(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False  # (no IP address: a unix socket has no peer address to check)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return True
    if address.is_unspecified or address.is_multicast:
        return False
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))  # (EADDRNOTAVAIL unless an interface has it)
    except OSError:
        return False
    return True
