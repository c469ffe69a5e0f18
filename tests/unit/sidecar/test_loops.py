from __future__ import annotations

from typing import Any

from sidecar.loops import OutgoingConnections, address_key

LISTENER = ("127.0.0.1", 15001)


class Dialed:
    """A transport as the pools get one: its two ends and whether it is closed."""

    def __init__(self, sockname: Any, peername: Any = LISTENER, closing: bool = False) -> None:
        self.ends = {"sockname": sockname, "peername": peername}
        self.closing = closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.ends.get(name, default)

    def is_closing(self) -> bool:
        return self.closing


def test_address_keys_are_ip_and_port_with_ipv4_mapped_addresses_as_ipv4() -> None:
    assert address_key(("127.0.0.1", 4000)) == ("127.0.0.1", 4000)
    assert address_key(("::ffff:127.0.0.1", 4000, 0, 0)) == ("127.0.0.1", 4000)
    assert address_key(("::1", 4000, 0, 0)) == ("::1", 4000)
    assert address_key("/run/app.sock") is None  # (a unix socket)
    assert address_key(None) is None


def test_an_open_dialed_connection_is_recognised_by_both_its_ends() -> None:
    own = OutgoingConnections()
    own.add(Dialed(("127.0.0.1", 41000)))
    own.add(Dialed(("::ffff:10.0.0.5", 41001, 0, 0), ("::ffff:10.0.0.5", 15001, 0, 0)))
    own.add(Dialed(("127.0.0.1", 41003), ("127.0.0.1", 8080)))  # (to the app)
    own.add(object())  # (an injected connector's stand-in: nothing to record)

    assert own.includes((("127.0.0.1", 41000), LISTENER))
    assert own.includes((("10.0.0.5", 41001), ("10.0.0.5", 15001)))
    assert not own.includes((("127.0.0.1", 41002), LISTENER))
    # a client whose port one of ours to another destination also has (Linux shares them)
    assert not own.includes((("127.0.0.1", 41003), LISTENER))
    assert not own.includes(None)


def test_a_closed_connection_no_longer_counts_and_is_dropped() -> None:
    own = OutgoingConnections()
    dialed = Dialed(("127.0.0.1", 41000))
    own.add(dialed)
    dialed.closing = True  # its port may now be anyone's

    assert not own.includes((("127.0.0.1", 41000), LISTENER))
    assert len(own) == 0


def test_closed_connections_are_swept_when_the_table_doubles() -> None:
    own = OutgoingConnections()
    dialed = [Dialed(("127.0.0.1", 20000 + n)) for n in range(3000)]
    for n, transport in enumerate(dialed):
        own.add(transport)
        if n >= 10:
            dialed[n - 10].closing = True  # (at most ten open at a time)

    assert len(own) < 2 * OutgoingConnections._MIN_SWEEP
    assert own.includes((("127.0.0.1", 20000 + 2999), LISTENER))
