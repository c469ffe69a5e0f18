"""Transparent capture: istio-iptables-style nat rules that steer an unmodified app's TCP traffic
through the sidecar, and the recovery of each redirected connection's original destination.

Rules (IPv4, nat table, our own chains so install/removal never touches anyone else's):

    PREROUTING -p tcp -j MESHLENS_INBOUND
    MESHLENS_INBOUND -p tcp --dport <app port> -j MESHLENS_IN_REDIRECT   (one per inbound port)
    MESHLENS_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
    OUTPUT -p tcp -j MESHLENS_OUTPUT
    MESHLENS_OUTPUT -m owner --uid-owner <uid> -j RETURN   (the sidecar's own traffic,
    MESHLENS_OUTPUT -m owner --gid-owner <gid> -j RETURN    by user or by group)
    MESHLENS_OUTPUT -o lo -j RETURN / -d 127.0.0.1/32 -j RETURN   (loopback: sidecar -> app)
    MESHLENS_OUTPUT -p tcp --dport <excluded> -j RETURN
    MESHLENS_OUTPUT -j MESHLENS_REDIRECT
    MESHLENS_REDIRECT -p tcp -j REDIRECT --to-ports 15001

The sidecar's own connections are exempted by socket owner (Istio's uid/gid 1337), not by a
firewall mark: a mark would have to be set on every socket the sidecar opens (upstream pool,
OTLP exporter, control-plane client), while the owner covers all of them at once. A sidecar run
as the capture uid (rules installed by someone else) is exempt by uid. A root sidecar installs
the rules itself and then switches its effective *gid* to the capture gid: sockets carry the
creator's fsgid, so they are exempt, while the process keeps root's uid and capabilities (to
read root-only files lazily and to remove the rules on exit). See `CaptureSession`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from sidecar.discovery import DynamicEndpoints
from sidecar.http import Endpoint, Request, Response
from sidecar.stack import Handler, Layer

__all__ = [
    "CHAINS",
    "SO_ORIGINAL_DST",
    "CaptureConfig",
    "CaptureError",
    "CaptureSession",
    "EndpointIndex",
    "install_commands",
    "original_dst",
    "original_dst_layer",
    "parse_sockaddr_in",
    "remove_commands",
    "restore_authority",
]

logger = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; getsockopt(SOL_IP, SO_ORIGINAL_DST, 16)
INBOUND, IN_REDIRECT = "MESHLENS_INBOUND", "MESHLENS_IN_REDIRECT"
OUTPUT, REDIRECT = "MESHLENS_OUTPUT", "MESHLENS_REDIRECT"
CHAINS = (INBOUND, IN_REDIRECT, OUTPUT, REDIRECT)
_JUMPS = (("PREROUTING", INBOUND), ("OUTPUT", OUTPUT))

Run = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class CaptureError(Exception):
    """The capture rules could not be installed (not root, no iptables, a rule refused)."""


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """What to capture: inbound ports -> `inbound_port`, other outbound TCP -> `outbound_port`."""

    inbound_ports: tuple[int, ...]
    outbound_port: int = 15001
    inbound_port: int = 15006
    exclude_ports: tuple[int, ...] = ()  # destination ports never redirected (either way)
    uid: int = 1337  # the sidecar's own traffic (by socket owner) is never redirected
    gid: int = 1337

    def __post_init__(self) -> None:
        ports = (*self.inbound_ports, *self.exclude_ports, self.outbound_port, self.inbound_port)
        bad = [p for p in ports if not 0 < p < 65536]
        if bad:
            raise ValueError(f"capture ports must be in 1..65535, got {bad}")
        if self.uid <= 0 or self.gid <= 0:
            # 0 would exempt every root process (and a negative id is no id)
            raise ValueError(f"capture uid/gid must be > 0, got {self.uid}/{self.gid}")


def install_commands(config: CaptureConfig) -> list[list[str]]:
    """The iptables invocations (argv after `iptables -w -t nat`) that set up capture."""
    cmds: list[list[str]] = [["-N", chain] for chain in CHAINS]
    cmds.append(
        ["-A", IN_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(config.inbound_port)]
    )
    cmds.append(
        ["-A", REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(config.outbound_port)]
    )
    excluded = set(config.exclude_ports)
    for port in sorted(set(config.inbound_ports) - excluded):
        cmds.append(["-A", INBOUND, "-p", "tcp", "--dport", str(port), "-j", IN_REDIRECT])
    cmds.append(["-A", OUTPUT, "-m", "owner", "--uid-owner", str(config.uid), "-j", "RETURN"])
    cmds.append(["-A", OUTPUT, "-m", "owner", "--gid-owner", str(config.gid), "-j", "RETURN"])
    cmds.append(["-A", OUTPUT, "-o", "lo", "-j", "RETURN"])
    cmds.append(["-A", OUTPUT, "-d", "127.0.0.1/32", "-j", "RETURN"])
    for port in sorted(excluded):
        cmds.append(["-A", OUTPUT, "-p", "tcp", "--dport", str(port), "-j", "RETURN"])
    cmds.append(["-A", OUTPUT, "-p", "tcp", "-j", REDIRECT])
    cmds.extend(["-A", parent, "-p", "tcp", "-j", chain] for parent, chain in _JUMPS)
    return cmds


def remove_commands() -> list[list[str]]:
    """Unhook, flush and delete our chains; each may fail harmlessly when already gone."""
    cmds: list[list[str]] = [["-D", parent, "-p", "tcp", "-j", chain] for parent, chain in _JUMPS]
    cmds.extend(["-F", chain] for chain in CHAINS)
    cmds.extend(["-X", chain] for chain in CHAINS)
    return cmds


def _binary() -> str | None:
    found = shutil.which("iptables")
    if found is None and os.access("/usr/sbin/iptables", os.X_OK):  # PATH without sbin
        found = "/usr/sbin/iptables"
    return found


def _iptables(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    binary = _binary() or "iptables"
    return subprocess.run(
        [binary, "-w", "5", "-t", "nat", *args], capture_output=True, text=True, timeout=10
    )


def _remove_all(run: Run) -> None:
    for cmd in remove_commands():
        if cmd[0] == "-D":  # the jump may be present more than once after a crash mid-install
            for _ in range(16):
                if run(cmd).returncode != 0:
                    break
        else:
            run(cmd)


class CaptureSession:
    """Installs the rules (replacing any left by a crashed sidecar) and removes them again.

    `exempt_self()` switches the effective gid to the capture gid once the rules are in, so
    every socket the process opens afterwards is exempt; `remove()` switches it back.
    """

    def __init__(self, config: CaptureConfig, *, run: Run = _iptables) -> None:
        self.config = config
        self._run = run
        self.installed = False
        self._saved_gid: int | None = None

    def install(self) -> None:
        """Idempotent: clears our chains first. Raises CaptureError listing the failing rule."""
        # no uid check: CAP_NET_ADMIN is what counts, and iptables says so when it is missing
        if self._run is _iptables and _binary() is None:
            raise CaptureError("--capture needs the iptables command (apt-get install iptables)")
        _remove_all(self._run)
        self.installed = True
        for cmd in install_commands(self.config):
            result = self._run(cmd)
            if result.returncode != 0:
                self.remove()
                raise CaptureError(f"iptables {' '.join(cmd)}: {result.stderr.strip()}")
        logger.info(
            "capture rules installed",
            extra={"inbound_ports": self.config.inbound_ports, "uid": self.config.uid},
        )

    def exempt_self(self) -> None:
        """Open sockets as the capture gid from now on (unless already running as the uid)."""
        if os.geteuid() != self.config.uid and self._saved_gid is None:
            self._saved_gid = os.getegid()
            os.setegid(self.config.gid)

    def remove(self) -> None:
        """Remove the rules (if this session installed them) and restore the effective gid."""
        if self._saved_gid is not None:
            os.setegid(self._saved_gid)
            self._saved_gid = None
        if self.installed:
            _remove_all(self._run)
            self.installed = False
            logger.info("capture rules removed")


# -- original destination -------------------------------------------------------------------


def parse_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """(ip, port) from a `struct sockaddr_in` as SO_ORIGINAL_DST returns it."""
    if len(raw) < 8:
        raise ValueError(f"sockaddr_in needs 8 bytes, got {len(raw)}")
    family = struct.unpack_from("=H", raw)[0]
    if family != socket.AF_INET:
        raise ValueError(f"not an AF_INET address (family {family})")
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


class _SockOpts(Protocol):  # the part of a (pseudo-)socket we use; uvloop's PseudoSocket too
    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...
    def getsockname(self) -> object: ...


def original_dst(sock: _SockOpts | None) -> str:
    """ "ip:port" the connection on `sock` was addressed to before a REDIRECT, else ""."""
    if sock is None:
        return ""
    try:
        host, port = parse_sockaddr_in(sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))
        local = sock.getsockname()
    except (OSError, ValueError):  # not redirected / not IPv4 / no conntrack entry
        return ""
    if isinstance(local, tuple) and (local[0], local[1]) == (host, port):
        return ""  # a direct connection to the listener: conntrack reports ourselves
    return f"{host}:{port}"


class EndpointIndex:
    """Which service an endpoint address belongs to: control-plane endpoints, then the config's."""

    def __init__(
        self,
        static: Mapping[str, Iterable[Endpoint]],
        dynamic: DynamicEndpoints | None = None,
    ) -> None:
        self._static = _index(static)
        self._dynamic = dynamic
        self._dynamic_version = -1
        self._dynamic_index: dict[str, str] = {}

    def service_at(self, address: str) -> str | None:
        if self._dynamic is not None:
            if self._dynamic.version != self._dynamic_version:
                self._dynamic_index = _index(self._dynamic.snapshot())
                self._dynamic_version = self._dynamic.version
            found = self._dynamic_index.get(address)
            if found is not None:
                return found
        return self._static.get(address)


def _index(table: Mapping[str, Iterable[Endpoint]]) -> dict[str, str]:
    return {e.address: service for service, endpoints in table.items() for e in endpoints}


def original_dst_layer(index: EndpointIndex) -> Layer:
    """Outbound, before routing: a captured request is routed by where it was going.

    An original destination that is a known endpoint routes to that service; any other is
    passed through to exactly that address (not to whatever the Host header names). The app's
    own authority is kept in `context.captured_authority` and restored by the terminal.
    """

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            context = request.context
            dst = context.original_dst
            if not dst:
                return await inner(request)
            service = index.service_at(dst)
            context.captured_authority = request.authority
            context.attributes["meshlens.capture.original_dst"] = dst
            return await inner(replace(request, authority=service or dst))

        return handle

    return wrap


def restore_authority(request: Request) -> Request:
    """The request with the app's own Host back (for the upstream), if capture replaced it."""
    captured = request.context.captured_authority
    if not captured or captured == request.authority:
        return request
    return replace(request, authority=captured)
