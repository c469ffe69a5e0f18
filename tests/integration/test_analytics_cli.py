"""`meshlens analytics` and the analytics part of `meshlens up` as real processes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import open_test_store
from tests.integration.conftest import REPO

API = "/api/v1/controlplane"
OPS = "ops-token-0123456789abcdef"


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process, lines: list[str]) -> None:
        self.proc = proc
        self.lines = lines

    def address(self, name: str) -> str:
        for line in self.lines:
            if line.startswith(f"{name} listening on "):
                return line.split(" listening on ", 1)[1]
        raise AssertionError(f"no {name} address in {self.lines}")

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout_s)


Start = Callable[..., Awaitable[Proc]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    procs: list[asyncio.subprocess.Process] = []

    async def run(
        *args: str, env: dict[str, str] | None = None, ready: str = "meshlens ready"
    ) -> Proc:
        log = tmp_path / f"stderr-{len(procs)}.log"
        stderr = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshlens_cli", *args,
            stdout=asyncio.subprocess.PIPE, stderr=stderr, cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )  # fmt: skip
        os.close(stderr)
        procs.append(proc)
        assert proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(60):
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    break
                lines.append(raw.decode().rstrip("\n"))
                if ready in lines[-1]:
                    break
        return Proc(proc, lines)

    yield run
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def call(
    base: str, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.request(method, base + API + path, json=body, headers=headers) as resp,
    ):
        return resp.status, (await resp.json() if resp.status != 204 else None)


async def test_analytics_serves_the_control_plane_and_stops_cleanly(
    start: Start, tmp_path: Path
) -> None:
    env = {"MESH_ANALYTICS_API_TOKENS": f"ops:operator:{OPS}"}
    proc = await start(
        "analytics", "--store", f"chdb://{tmp_path / 'ch'}", "--http-port", "0", env=env
    )
    base = proc.address("analytics http")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)

    assert await call(base, "GET", "/fleet", OPS) == (200, [])
    assert (await call(base, "GET", "/fleet", None))[0] == 401
    assert (await call(base, "GET", "/fleet", "wrong-token-0123456789"))[0] == 403

    assert await proc.stop(signal.SIGTERM) == 0
    # The analysis engine ran as in `meshlens up` (its start creates the incidents table; no
    # request here touched the incidents API, which would create it too).
    store = open_test_store(f"chdb://{tmp_path / 'ch'}")
    try:
        tables = await store.query("SELECT name FROM system.tables WHERE database = 'default'")
    finally:
        await store.close()
    assert "meshlens_incidents" in {t["name"] for t in tables}


async def test_analytics_rejects_bad_settings(start: Start) -> None:
    proc = await start(
        "analytics", "--http-port", "0", env={"MESH_ANALYTICS_LEASE_TTL_S": "soon"}, ready="\0"
    )
    assert await asyncio.wait_for(proc.proc.wait(), 30) == 2


async def test_up_runs_the_control_plane_a_sidecar_registers_gets_its_policy_and_acks(
    start: Start, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    up_args = [
        "up", "--data", str(data), "--otlp-http-port", "0", "--otlp-grpc-port", "0",
        "--http-port", "0", "--bootstrap-services", "default/web",
    ]  # fmt: skip
    env = {"MESH_ANALYTICS_API_TOKENS": "", "MESH_ANALYTICS_BOOTSTRAP_TOKENS": ""}
    up = await start(*up_args, env=env)
    base = up.address("analytics http")
    operator_file = data / "tokens" / "operator.token"
    boot_file = data / "tokens" / "bootstrap" / "default.web.token"
    operator = operator_file.read_text().strip()
    assert operator_file.stat().st_mode & 0o777 == 0o600
    assert boot_file.stat().st_mode & 0o777 == 0o600
    assert any(operator in line and str(operator_file) in line for line in up.lines)
    assert any(str(boot_file) in line for line in up.lines)
    assert not any(boot_file.read_text().strip() in line for line in up.lines)

    status, created = await call(
        base,
        "PUT",
        "/policies/web",
        operator,
        {"document": {"service": "web", "upstreams": {"api": {}}}, "reason": "first"},
    )
    assert status == 201 and created["version"] == 1

    sidecar = await start(
        "sidecar", "--service", "web", "--app-port", "9",
        "--admin-port", "0", "--outbound-port", "0", "--inbound-port", "0",
        "--control-plane", base, "--bootstrap-token-file", str(boot_file),
        "--instance-id", "web-1", "--state-dir", str(tmp_path / "state"),
        "--labels", "version=v7",
        ready="ready:",
    )  # fmt: skip
    admin = re.search(r"admin=(http://[\d.:]+)", sidecar.lines[-1])
    assert admin is not None

    async def acked() -> dict[str, Any] | None:
        fleet = (await call(base, "GET", "/fleet", operator))[1]
        entry = next((e for e in fleet if e["instance"] == "web-1"), None)
        return entry if entry is not None and entry["acked_version"] == 1 else None

    for _ in range(100):
        entry = await acked()
        if entry is not None:
            break
        await asyncio.sleep(0.1)
    assert entry is not None, "the sidecar never ACKed version 1"
    assert entry["labels"] == {"version": "v7"} and entry["in_sync"] is True
    async with (
        aiohttp.ClientSession() as session,
        session.get(admin.group(1) + "/config", timeout=aiohttp.ClientTimeout(total=5)) as resp,
    ):
        config = await resp.json()
    assert config["version"] == "1" and config["source"] == "control-plane"
    saved = json.loads((tmp_path / "state" / "last-good.json").read_text())
    assert saved["version"] == 1 and saved["endpoints"] == {"api": []}

    assert await sidecar.stop(signal.SIGTERM) == 0
    assert await up.stop(signal.SIGINT) == 0

    # a second start reuses the tokens and does not print the secret again
    again = await start(*up_args, env=env)
    assert operator_file.read_text().strip() == operator
    assert not any(operator in line for line in again.lines)
    assert any(f"operator token in {operator_file}" in line for line in again.lines)
    assert await again.stop(signal.SIGTERM) == 0
