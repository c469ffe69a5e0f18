"""Graceful drain of a real `meshlens sidecar` process: SIGTERM and POST /drain."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from tests.integration.conftest import ScriptedUpstream, SidecarProcess, Step, eventually, url

pytestmark = pytest.mark.timeout(60)


async def test_sigterm_finishes_the_in_flight_request_then_exits(
    upstream: ScriptedUpstream, sidecar_process: Callable[..., Awaitable[SidecarProcess]]
) -> None:
    sidecar = await sidecar_process("web", upstream.port)
    target = f"http://127.0.0.1:{upstream.port}"
    upstream.script.extend([Step(), Step(delay_s=1.0, body=b"slow but complete")])
    async with aiohttp.ClientSession() as idle_session, aiohttp.ClientSession() as session:
        async with idle_session.get(f"{target}/idle", proxy=url(sidecar.outbound)) as response:
            assert response.status == 200  # leaves an idle keep-alive connection open
        slow = asyncio.create_task(session.get(f"{target}/slow", proxy=url(sidecar.outbound)))
        await eventually(lambda: len(upstream.seen) >= 2)
        sidecar.terminate()
        response = await asyncio.wait_for(slow, 10)
        assert response.status == 200
        assert await response.read() == b"slow but complete"
        assert response.headers.get("Connection") == "close"
        response.release()
    assert await sidecar.wait(10) == 0
    with pytest.raises(OSError):
        await asyncio.open_connection(*sidecar.outbound)


async def test_post_drain_on_admin_stops_readiness_and_the_process(
    upstream: ScriptedUpstream, sidecar_process: Callable[..., Awaitable[SidecarProcess]]
) -> None:
    sidecar = await sidecar_process("web", upstream.port)
    admin = url(sidecar.admin)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{admin}/ready") as response:
            assert response.status == 200
        async with session.post(f"{admin}/drain") as response:
            assert response.status == 202
    assert await sidecar.wait(10) == 0
