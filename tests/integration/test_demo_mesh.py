"""The demo mesh without a control plane: static policy files, journeys through the sidecars,
a sidecar abort switched on by rewriting the callers' files (SIGHUP) and a crash with failover."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from demo.mesh import Mesh
from demo.topology import CHAIN


@pytest.fixture
async def otlp_sink() -> AsyncIterator[list[bytes]]:
    """Accepts OTLP/HTTP exports (what the apps and sidecars send) and keeps the bodies."""
    bodies: list[bytes] = []

    async def accept(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/{signal}", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a for a in runner.addresses if isinstance(a, tuple))[1]
    bodies.append(f"http://127.0.0.1:{port}".encode())
    try:
        yield bodies
    finally:
        await runner.cleanup()


async def _journeys(url: str, count: int) -> list[int]:
    statuses = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for n in range(count):
            method, path = ("POST", "/order") if n % 2 else ("GET", "/status")
            async with session.request(method, url + path) as response:
                await response.read()
                statuses.append(response.status)
    return statuses


async def test_static_policy_files_carry_journeys_aborts_and_failover(
    tmp_path: Path, otlp_sink: list[bytes]
) -> None:
    mesh = Mesh(CHAIN, tmp_path, otlp_sink[0].decode(), seed=3)
    try:
        await mesh.start()
        [entry] = mesh.entry_urls()
        assert await _journeys(entry, 10) == [200] * 10
        assert (tmp_path / "sidecars" / "gateway-1.json").exists()

        await mesh.set_abort("pricing", 503, 100.0)  # orders' sidecars abort every call
        statuses = []
        for _ in range(50):  # the sidecars poll their file; bounded wait for the new version
            statuses = await _journeys(entry, 2)
            if statuses[1] >= 500:
                break
        assert statuses[0] == 200 and statuses[1] >= 500  # only /order goes through pricing
        await mesh.clear_abort("pricing")
        for _ in range(50):
            if await _journeys(entry, 2) == [200, 200]:
                break
        else:
            pytest.fail("abort never cleared")

        await mesh.kill("orders-1")  # orders-2 takes over (connect failures are retried)
        statuses = await _journeys(entry, 10)
        assert statuses.count(200) >= 9
        await mesh.restart("orders-1")
    finally:
        await mesh.stop()
    assert all(not i.app.running and not i.sidecar.running for i in mesh.instances.values())
    assert len(otlp_sink) > 1  # spans and metrics reached the collector URL
