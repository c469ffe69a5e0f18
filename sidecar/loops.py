"""This sidecar's own outgoing connections, to tell one that comes back in: a request loop.

The outbound listener passes a request for an unknown host:port through to it (Istio's
ALLOW_ANY). Addressed to the sidecar's own outbound listener, it comes straight back in, is
passed through again, and so on. Names are refused before connecting (protocols.OwnListeners:
127.0.0.1, localhost, ::1, 0.0.0.0 and the listen host, with the outbound or admin port), but
a host has more names than a list can hold: 127.1, ::ffff:127.0.0.1, 2130706433, its own pod
or host IPs, any DNS name of them. Each of those went round until the x-forwarded-for header
the hops appended grew past the header limit: about 64 hops for one request, two sockets each
(a real sidecar: 1 to 2.5 s, and 128 more sockets open after the 431 answer).

So a sidecar's upstream pools record both ends of every connection they open (`dial`, into
the sidecar's one OutgoingConnections), and its outbound listener refuses a request on a
connection whose two ends are one of those, seen from the other side (codec.py): whatever
the name, the loop ends at its first turn. Both ends, not the local address alone: Linux
gives one local port to connections to different destinations, so a client's connection to
the listener could share its port with one of ours to an app (a benchmark run met one such
client in ~560,000 requests and got a false 404). (One table per sidecar, not per process:
tests run several sidecars in one.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConnectionKey", "OutgoingConnections", "address_key", "connection_key"]

# (one end, the other end) of a TCP connection, each (ip, port)
ConnectionKey = tuple[tuple[str, int], tuple[str, int]]


def address_key(sockaddr: object) -> tuple[str, int] | None:
    """(ip, port) of a socket address as the transport reports it; an IPv4-mapped IPv6
    address (a dual-stack socket) as its IPv4 address. None when it is not an IP address."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        return None
    host, port = sockaddr[0], sockaddr[1]
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, port


def connection_key(near: object, far: object) -> ConnectionKey | None:
    """(near, far) as address keys; None unless both are IP addresses."""
    near_key, far_key = address_key(near), address_key(far)
    if near_key is None or far_key is None:
        return None
    return near_key, far_key


class OutgoingConnections:
    """Both ends of each open connection this sidecar dialed (local, remote), with its
    transport.

    An entry stays until its transport is seen closed: on a lookup (a closed one's addresses
    may be reused by anyone) or when the table has doubled since it was last swept."""

    _MIN_SWEEP = 1024

    def __init__(self) -> None:
        self._by_ends: dict[ConnectionKey, Any] = {}
        self._sweep_at = self._MIN_SWEEP

    def __len__(self) -> int:
        return len(self._by_ends)

    def add(self, transport: Any) -> None:
        """Record `transport`, a connection just dialed (one without a socket address: none)."""
        get_extra_info = getattr(transport, "get_extra_info", None)
        if get_extra_info is None:
            return
        key = connection_key(get_extra_info("sockname"), get_extra_info("peername"))
        if key is None:
            return
        self._by_ends[key] = transport
        if len(self._by_ends) >= self._sweep_at:
            self._by_ends = {k: t for k, t in self._by_ends.items() if not t.is_closing()}
            self._sweep_at = max(self._MIN_SWEEP, 2 * len(self._by_ends))

    def includes(self, accepted: ConnectionKey | None) -> bool:
        """True when `accepted` (an accepted connection's (peer, own address)) is the other
        side of an open connection of ours: this sidecar is talking to itself."""
        if accepted is None:
            return False
        transport = self._by_ends.get(accepted)
        if transport is None:
            return False
        if transport.is_closing():
            del self._by_ends[accepted]
            return False
        return True
