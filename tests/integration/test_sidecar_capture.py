"""Transparent capture end to end: two hosts as network namespaces joined by a veth pair, an
unmodified curl in host A calling an unmodified http.server in host B by IP, each host with a
`meshlens sidecar --capture`; the spans reach a real collector (embedded store) and the iptables
rules are gone after SIGTERM. All addresses exist only inside the namespaces this test creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from collector.store import open_store
from sidecar.capture import CHAINS

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
APP_PORT = 8080
OTLP_PORT = 4318


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def _in(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def _check(cmd: list[str]) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, f"{' '.join(cmd)}: {result.stderr}"
    return result.stdout


def _skip_reason() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "transparent capture needs root on Linux (network namespaces, iptables)"
    for tool in ("ip", "iptables", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/system-deps.sh installs it)"
    return None


@pytest.fixture
def hosts() -> Iterator[tuple[str, str, str, str]]:
    """(ns_a, ns_b, ip_a, ip_b): two fresh namespaces joined by a veth pair on 10.200.x.0/24."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    tag = secrets.token_hex(3)
    ns_a, ns_b = f"meshlens-test-{tag}-a", f"meshlens-test-{tag}-b"
    subnet = int(tag[:2], 16)
    ip_a, ip_b = f"10.200.{subnet}.1", f"10.200.{subnet}.2"
    created: list[str] = []
    try:
        for ns in (ns_a, ns_b):
            result = _ip("netns", "add", ns)
            if result.returncode != 0:
                pytest.skip(f"ip netns add is not permitted here: {result.stderr.strip()}")
            created.append(ns)
            _check(_in(ns, "ip", "link", "set", "lo", "up"))
        _check(_in(ns_a, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
                   "netns", ns_b))  # fmt: skip
        for ns, ip in ((ns_a, ip_a), (ns_b, ip_b)):
            _check(_in(ns, "ip", "addr", "add", f"{ip}/24", "dev", "veth0"))
            _check(_in(ns, "ip", "link", "set", "veth0", "up"))
        yield ns_a, ns_b, ip_a, ip_b
    finally:
        for ns in created:  # deleting a namespace takes its veth end, rules and sockets along
            _ip("netns", "del", ns)


class _Procs:
    """Child processes started in the namespaces; every one is killed at the end."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, cmd: list[str], ready: str, timeout_s: float = 60.0) -> list[str]:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(REPO),
            env=ENV,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(timeout_s):
            while not lines or ready not in lines[-1]:
                line = (await proc.stdout.readline()).decode()
                assert line, f"{cmd[4:7]} exited early: {lines}"
                lines.append(line.strip())
        return lines

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


@pytest.fixture
async def procs() -> AsyncIterator[_Procs]:
    running = _Procs()
    try:
        yield running
    finally:
        await running.close()


def _sidecar(ns: str, service: str, collector: str, *extra: str) -> list[str]:
    return _in(ns, sys.executable, "-m", "meshlens_cli", "--log-level", "WARNING", "sidecar",
               "--service", service, "--app-port", str(APP_PORT), "--listen", "0.0.0.0",
               "--collector", collector,
               "--capture", "--capture-uid", "1337", "--capture-gid", "1337", *extra)  # fmt: skip


def _nat_rules(ns: str) -> str:
    return _check(_in(ns, "iptables", "-w", "5", "-t", "nat", "-S"))


async def _stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return await asyncio.wait_for(proc.wait(), 30)


async def test_unmodified_client_and_server_are_captured_through_both_sidecars(
    hosts: tuple[str, str, str, str], procs: _Procs, tmp_path: Path
) -> None:
    ns_a, ns_b, _, ip_b = hosts
    store_url = f"chdb://{tmp_path / 'clickhouse'}"
    await procs.start(
        _in(ns_b, sys.executable, "-m", "meshlens_cli", "--log-level", "WARNING", "collector",
            "--store", store_url, "--host", "0.0.0.0", "--otlp-http-port", str(OTLP_PORT),
            "--otlp-grpc-port", "0", "--spool", str(tmp_path / "spool")),
        "meshlens ready",
    )  # fmt: skip
    collector = procs.procs[-1]
    await procs.start(
        _in(ns_b, sys.executable, "-m", "http.server", str(APP_PORT), "--bind", "0.0.0.0"),
        "Serving HTTP",
    )
    await procs.start(_sidecar(ns_b, "server", f"http://127.0.0.1:{OTLP_PORT}"), "ready:")
    # host A's sidecar knows the server's endpoint: a call to that address is a call to "server"
    config = tmp_path / "client.json"
    config.write_text(json.dumps({"upstreams": {"server": {"endpoints": [f"{ip_b}:{APP_PORT}"]}}}))
    await procs.start(
        _sidecar(ns_a, "client", f"http://{ip_b}:{OTLP_PORT}", "--config", str(config)), "ready:"
    )
    sidecar_b, sidecar_a = procs.procs[-2], procs.procs[-1]
    for ns in (ns_a, ns_b):
        assert all(f"-N {chain}" in _nat_rules(ns) for chain in CHAINS)

    # the client knows nothing of the mesh: plain curl to the server's IP, no proxy settings
    url = f"http://{ip_b}:{APP_PORT}/"
    curl = _in(ns_a, "curl", "-sS", "--noproxy", "*", "-m", "10", "-o", "/dev/null",
               "-w", "%{http_code}", url)  # fmt: skip
    for _ in range(3):
        assert await asyncio.to_thread(_check, curl) == "200"
    # an address no service owns (the collector's port) is passed through to where it was going
    other = [*curl[:-1], f"http://{ip_b}:{OTLP_PORT}/"]
    assert await asyncio.to_thread(_check, other) == "404"

    assert await _stop(sidecar_a) == 0
    assert await _stop(sidecar_b) == 0
    for ns in (ns_a, ns_b):
        rules = _nat_rules(ns)
        assert "MESHLENS" not in rules, rules
    # with the rules gone the same call still works, straight to the server (no sidecar)
    assert await asyncio.to_thread(_check, curl) == "200"
    assert await _stop(collector, signal.SIGINT) == 0

    store = open_store(store_url)
    try:
        rows = await store.query(
            "SELECT ServiceName, SpanKind, SpanAttributes['server.address'] AS address, "
            "SpanAttributes['http.response.status_code'] AS status, TraceId, "
            "SpanAttributes['meshlens.capture.original_dst'] AS original_dst, "
            "SpanAttributes['meshlens.upstream'] AS upstream, "
            "SpanAttributes['meshlens.route'] AS route "
            "FROM otel_traces ORDER BY Timestamp"
        )
    finally:
        await store.close()
    client = [r for r in rows if r["ServiceName"] == "client" and r["SpanKind"] == "Client"]
    server = [r for r in rows if r["ServiceName"] == "server" and r["SpanKind"] == "Server"]
    mapped, passed = client[:3], client[3:]
    assert len(server) == 3, rows
    assert {r["status"] for r in mapped + server} == {"200"}
    assert {(r["original_dst"], r["upstream"], r["route"]) for r in mapped} == {
        (f"{ip_b}:{APP_PORT}", "server", "default")
    }
    assert [(r["original_dst"], r["route"], r["status"]) for r in passed] == [
        (f"{ip_b}:{OTLP_PORT}", "passthrough", "404")
    ]
    # one trace per call, seen by both sidecars: the caller's sidecar propagated its context
    assert {r["TraceId"] for r in mapped} == {r["TraceId"] for r in server}


async def test_another_host_cannot_use_the_outbound_listener_or_drain_the_sidecar(
    hosts: tuple[str, str, str, str], procs: _Procs
) -> None:
    # deployed with --listen 0.0.0.0 (the injection and the compose file), the outbound
    # listener was a proxy for any host that could reach the pod, calling mesh services with
    # the pod's identity, and POST /drain on the admin port stopped the sidecar for anyone
    ns_a, ns_b, _, ip_b = hosts
    await procs.start(
        _in(ns_b, sys.executable, "-m", "http.server", str(APP_PORT), "--bind", "0.0.0.0"),
        "Serving HTTP",
    )
    await procs.start(
        _in(ns_b, sys.executable, "-m", "meshlens_cli", "--log-level", "WARNING", "sidecar",
            "--service", "server", "--app-port", str(APP_PORT), "--listen", "0.0.0.0",
            "--admin-port", "15000", "--outbound-port", "15001", "--inbound-port", "15006"),
        "ready:",
    )  # fmt: skip

    def curl(ns: str, *args: str) -> list[str]:
        return _in(ns, "curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", *args)

    app = f"http://127.0.0.1:{APP_PORT}/"
    via_proxy = ("--noproxy", "", "-x", f"http://{ip_b}:15001", app)
    assert await asyncio.to_thread(_check, curl(ns_a, *via_proxy)) == "403"
    drain = ("-X", "POST", f"http://{ip_b}:15000/drain")
    assert await asyncio.to_thread(_check, curl(ns_a, *drain)) == "403"
    # probes and scrapes from other hosts still read the admin; this host still proxies
    assert await asyncio.to_thread(_check, curl(ns_a, f"http://{ip_b}:15000/ready")) == "200"
    assert await asyncio.to_thread(_check, curl(ns_b, *via_proxy)) == "200"
    assert await asyncio.to_thread(_check, curl(ns_b, *drain)) == "202"
