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

__all__ = ["LocalAddresses", "reaches_own_listener"]


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


def reaches_own_listener(host: str, listen_host: str) -> bool:
    """A connection to `host` (a --app-host) could reach a listener of this host bound on
    `listen_host` (--listen): `host` is localhost, the listen address, a loopback or unspecified
    address, or, with the listeners on every interface (0.0.0.0, as deployed), any address of
    this host (the pod's own IP). Names other than localhost are not resolved: such an app is
    taken to be elsewhere (in compose it is another container's name)."""
    if host in ("localhost", listen_host):
        return True
    address = _address(host, legacy=True)
    if address is None:
        return False
    if address.is_loopback or address.is_unspecified:
        return True
    listen = _address(listen_host, legacy=True)
    if listen is None:
        return False
    return address == listen or (listen.is_unspecified and _is_local(str(address)))


def _address(
    text: str, *, legacy: bool = False
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`text` as an address (an IPv4-mapped IPv6 one as IPv4; a zone dropped); `legacy`: also
    the forms the resolver reads as IPv4 (127.1, 2130706433, 0x7f000001)."""
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        if not legacy:
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(text))
        except (OSError, ValueError):  # (not an address; ValueError: a NUL in it)
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address


def _is_local(ip: str) -> bool:
    address = _address(ip)
    if address is None:
        return False  # (no IP address: a unix socket has no peer address to check)
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
