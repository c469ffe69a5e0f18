from __future__ import annotations

import argparse
import socket
import struct
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from sidecar import cli
from sidecar.build import build_outbound
from sidecar.capture import (
    CHAINS,
    SO_ORIGINAL_DST,
    CaptureConfig,
    CaptureError,
    CaptureSession,
    EndpointIndex,
    install_commands,
    original_dst,
    original_dst_layer,
    parse_sockaddr_in,
    remove_commands,
    restore_authority,
)
from sidecar.config import parse_config
from sidecar.discovery import DynamicEndpoints
from sidecar.http import Endpoint, Request, Response
from sidecar.stack import Handler, compose
from tests.fakes import ScriptedUpstream, make_request

# -- rules as data ---------------------------------------------------------------------------


def test_install_commands_follow_istio_iptables_order() -> None:
    config = CaptureConfig(inbound_ports=(8080,), exclude_ports=(22, 4317), uid=1337, gid=1338)

    assert install_commands(config) == [
        ["-N", "MESHLENS_INBOUND"],
        ["-N", "MESHLENS_IN_REDIRECT"],
        ["-N", "MESHLENS_OUTPUT"],
        ["-N", "MESHLENS_REDIRECT"],
        ["-A", "MESHLENS_IN_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15006"],
        ["-A", "MESHLENS_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"],
        ["-A", "MESHLENS_INBOUND", "-p", "tcp", "--dport", "8080", "-j", "MESHLENS_IN_REDIRECT"],
        ["-A", "MESHLENS_OUTPUT", "-m", "owner", "--uid-owner", "1337", "-j", "RETURN"],
        ["-A", "MESHLENS_OUTPUT", "-m", "owner", "--gid-owner", "1338", "-j", "RETURN"],
        ["-A", "MESHLENS_OUTPUT", "-o", "lo", "-j", "RETURN"],
        ["-A", "MESHLENS_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN"],
        ["-A", "MESHLENS_OUTPUT", "-p", "tcp", "--dport", "22", "-j", "RETURN"],
        ["-A", "MESHLENS_OUTPUT", "-p", "tcp", "--dport", "4317", "-j", "RETURN"],
        ["-A", "MESHLENS_OUTPUT", "-p", "tcp", "-j", "MESHLENS_REDIRECT"],
        ["-A", "PREROUTING", "-p", "tcp", "-j", "MESHLENS_INBOUND"],
        ["-A", "OUTPUT", "-p", "tcp", "-j", "MESHLENS_OUTPUT"],
    ]


def test_an_excluded_port_is_not_captured_inbound_either() -> None:
    config = CaptureConfig(inbound_ports=(8080, 9090), exclude_ports=(9090,))

    inbound = [c for c in install_commands(config) if c[:2] == ["-A", "MESHLENS_INBOUND"]]

    assert inbound == [
        ["-A", "MESHLENS_INBOUND", "-p", "tcp", "--dport", "8080", "-j", "MESHLENS_IN_REDIRECT"]
    ]


def test_custom_listener_ports_are_the_redirect_targets() -> None:
    config = CaptureConfig(inbound_ports=(80,), outbound_port=4140, inbound_port=4143)

    targets = [c[-1] for c in install_commands(config) if "REDIRECT" in c[:6] and c[0] == "-A"]

    assert targets == ["4143", "4140"]


def test_remove_commands_unhook_flush_then_delete_every_chain() -> None:
    cmds = remove_commands()

    assert cmds[:2] == [
        ["-D", "PREROUTING", "-p", "tcp", "-j", "MESHLENS_INBOUND"],
        ["-D", "OUTPUT", "-p", "tcp", "-j", "MESHLENS_OUTPUT"],
    ]
    assert cmds[2:] == [["-F", c] for c in CHAINS] + [["-X", c] for c in CHAINS]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"inbound_ports": (0,)},
        {"inbound_ports": (8080,), "outbound_port": 70000},
        {"inbound_ports": (8080,), "exclude_ports": (-1,)},
        {"inbound_ports": (8080,), "uid": 0},
        {"inbound_ports": (8080,), "gid": 0},
    ],
)
def test_invalid_capture_config_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CaptureConfig(**kwargs)  # type: ignore[arg-type]


# -- session against a recording iptables ----------------------------------------------------


class RecordingIptables:
    """Stands in for the iptables binary (an external edge): records argv, fails on request."""

    def __init__(self, fail_on: Sequence[str] = (), jumps: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = list(fail_on)
        self.jumps = {parent: jumps for parent in ("PREROUTING", "OUTPUT")}  # hooks present

    def __call__(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        self.calls.append(cmd)
        code = 0
        if cmd[0] == "-D":
            code = 0 if self.jumps[cmd[1]] > 0 else 1
            self.jumps[cmd[1]] -= 1 - code
        elif cmd[0] == "-A" and cmd[1] in self.jumps:
            self.jumps[cmd[1]] += 1
        if " ".join(cmd) in self.fail_on:
            code = 1
        return subprocess.CompletedProcess(cmd, code, "", "refused" if code else "")


def test_install_clears_leftovers_first_then_adds_every_rule() -> None:
    run = RecordingIptables()
    session = CaptureSession(CaptureConfig(inbound_ports=(8080,)), run=run)

    session.install()

    install = install_commands(session.config)
    assert run.calls[-len(install) :] == install
    cleanup = run.calls[: -len(install)]
    assert {tuple(c) for c in cleanup} == {tuple(c) for c in remove_commands()}
    assert session.installed


def test_a_refused_rule_rolls_back_and_names_the_rule() -> None:
    bad = "-A MESHLENS_OUTPUT -m owner --uid-owner 1337 -j RETURN"
    run = RecordingIptables(fail_on=[bad])
    session = CaptureSession(CaptureConfig(inbound_ports=(8080,)), run=run)

    with pytest.raises(CaptureError, match=r"uid-owner 1337.*refused"):
        session.install()

    assert not session.installed
    assert run.calls[-len(CHAINS) :] == [["-X", c] for c in CHAINS]


def test_remove_deletes_duplicate_jumps_and_is_idempotent() -> None:
    run = RecordingIptables()
    session = CaptureSession(CaptureConfig(inbound_ports=(8080,)), run=run)
    session.install()
    run.jumps = {"PREROUTING": 2, "OUTPUT": 2}  # hooked twice (a crash mid-install)
    run.calls.clear()

    session.remove()
    session.remove()

    deletes = [c for c in run.calls if c[0] == "-D"]
    assert len(deletes) == 6  # per hook: two found, then the first miss ends the loop
    assert run.jumps == {"PREROUTING": 0, "OUTPUT": 0}
    assert run.calls[-1] == ["-X", "MESHLENS_REDIRECT"]
    assert not session.installed


# -- original destination --------------------------------------------------------------------


def _sockaddr(ip: str, port: int) -> bytes:
    return (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", port)
        + socket.inet_aton(ip)
        + bytes(8)
    )


class FakeSocket:
    def __init__(self, raw: bytes | OSError, local: tuple[str, int]) -> None:
        self.raw = raw
        self.local = local
        self.asked: list[tuple[int, int, int]] = []

    def getsockopt(self, level: int, option: int, buflen: int) -> bytes:
        self.asked.append((level, option, buflen))
        if isinstance(self.raw, OSError):
            raise self.raw
        return self.raw

    def getsockname(self) -> object:
        return self.local


def test_parse_sockaddr_in_reads_network_order_port_and_address() -> None:
    assert parse_sockaddr_in(_sockaddr("10.200.1.2", 8080)) == ("10.200.1.2", 8080)


@pytest.mark.parametrize(
    "raw", [b"\x02\x00", struct.pack("=H", socket.AF_INET6) + bytes(14)], ids=["short", "ipv6"]
)
def test_parse_sockaddr_in_refuses_other_shapes(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_sockaddr_in(raw)


def test_original_dst_of_a_redirected_connection() -> None:
    sock = FakeSocket(_sockaddr("10.200.1.2", 8080), local=("127.0.0.1", 15001))

    assert original_dst(sock) == "10.200.1.2:8080"
    assert sock.asked == [(socket.SOL_IP, SO_ORIGINAL_DST, 16)]


def test_no_original_dst_for_direct_or_untracked_connections() -> None:
    direct = FakeSocket(_sockaddr("127.0.0.1", 15001), local=("127.0.0.1", 15001))
    untracked = FakeSocket(OSError(2, "No such file or directory"), local=("127.0.0.1", 15001))

    assert original_dst(direct) == ""
    assert original_dst(untracked) == ""
    assert original_dst(None) == ""


# -- mapping to a service --------------------------------------------------------------------


def test_endpoint_index_prefers_control_plane_endpoints_and_follows_updates() -> None:
    dynamic = DynamicEndpoints({"reviews": [Endpoint("10.0.0.1", 80)]})
    index = EndpointIndex(
        {"ratings": [Endpoint("10.0.0.1", 80), Endpoint("10.0.0.9", 90)]}, dynamic
    )

    assert index.service_at("10.0.0.1:80") == "reviews"
    assert index.service_at("10.0.0.9:90") == "ratings"
    assert index.service_at("10.0.0.2:80") is None
    dynamic.update({"reviews": [Endpoint("10.0.0.2", 80)]})
    assert index.service_at("10.0.0.2:80") == "reviews"
    assert index.service_at("10.0.0.1:80") == "ratings"


def _captured(authority: str, dst: str) -> Request:
    request = make_request(authority=authority)
    request.context.original_dst = dst
    return request


def _outbound(doc: Mapping[str, Any], upstream: ScriptedUpstream, hosts: list[str]) -> Handler:
    config = parse_config(doc)
    static = {name: spec.endpoints for name, spec in config.upstreams.items()}

    async def terminal(request: Request) -> Response:
        hosts.append(restore_authority(request).authority)
        return await upstream(restore_authority(request))

    return build_outbound(
        config, terminal=terminal, outer=[original_dst_layer(EndpointIndex(static))]
    ).handler


async def test_a_captured_call_to_a_service_endpoint_routes_to_that_service() -> None:
    upstream, hosts = ScriptedUpstream(), list[str]()
    doc = {"upstreams": {"reviews": {"endpoints": ["10.0.0.1:80", "10.0.0.2:80"]}}}
    handler = _outbound(doc, upstream, hosts)

    request = _captured("10.0.0.2", "10.0.0.2:80")
    response = await handler(request)

    assert response.status == 200
    assert request.context.upstream == "reviews"
    assert request.context.route == "default"  # the service's own policy, balanced over both
    assert upstream.addresses()[0] in ("10.0.0.1:80", "10.0.0.2:80")
    assert hosts == ["10.0.0.2"]  # the app's own Host header goes upstream unchanged
    assert request.context.attributes["meshlens.capture.original_dst"] == "10.0.0.2:80"


async def test_an_unknown_original_destination_passes_through_to_exactly_that_address() -> None:
    upstream, hosts = ScriptedUpstream(), list[str]()
    handler = _outbound({}, upstream, hosts)

    # the Host header names something else: the connection's real destination wins
    request = _captured("example.test", "192.0.2.7:8443")
    await handler(request)

    assert request.context.route == "passthrough"
    assert upstream.addresses() == ["192.0.2.7:8443"]
    assert hosts == ["example.test"]


async def test_an_uncaptured_request_is_routed_by_its_host_as_before() -> None:
    upstream, hosts = ScriptedUpstream(), list[str]()
    handler = _outbound({"upstreams": {"reviews": {"endpoints": ["10.0.0.1:80"]}}}, upstream, hosts)

    request = make_request(authority="reviews")
    await handler(request)

    assert upstream.addresses() == ["10.0.0.1:80"]
    assert hosts == ["reviews"]
    assert "meshlens.capture.original_dst" not in request.context.attributes


async def test_the_layer_leaves_requests_without_original_dst_untouched() -> None:
    seen: list[Request] = []

    async def inner(request: Request) -> Response:
        seen.append(request)
        return Response(204)

    handler = compose([original_dst_layer(EndpointIndex({}))], inner)
    request = make_request(authority="reviews")
    await handler(request)

    assert seen == [request]
    assert restore_authority(request) is request


# -- command line ----------------------------------------------------------------------------


def _args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    argv = ["sidecar", "--service", "web", "--app-port", "8080", "--listen", "0.0.0.0"]
    return parser.parse_args([*argv, *extra])


def test_capture_flags_become_a_capture_config() -> None:
    args = _args("--capture", "--capture-exclude-ports", "22, 4317", "--capture-uid", "2102")

    config = cli._capture_config(args)

    assert config == CaptureConfig(
        inbound_ports=(8080,), exclude_ports=(22, 4317), uid=2102, gid=1337
    )
    assert cli._capture_config(_args()) is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--outbound-port", "0"], "fixed --outbound-port"),
        (["--capture-exclude-ports", "ssh"], "must be port numbers"),
        (["--capture-uid", "0"], "uid/gid must be > 0"),
        (["--listen", "127.0.0.1"], "needs --listen 0.0.0.0"),
    ],
)
def test_bad_capture_flags_are_clear_errors(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(_args("--capture", *extra)) == 2
    assert message in capsys.readouterr().err
