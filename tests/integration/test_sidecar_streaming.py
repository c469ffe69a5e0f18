"""Large bodies stream through a client+server sidecar pair (real processes) with flat memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from tests.integration.conftest import ScriptedUpstream, SidecarProcess, url

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20
TOTAL_MIB = 100
MAX_GROWTH_BYTES = 30 * MIB


async def _pair(
    upstream: ScriptedUpstream, sidecar_process: Callable[..., Awaitable[SidecarProcess]]
) -> tuple[SidecarProcess, SidecarProcess]:
    server = await sidecar_process("reviews", upstream.port)
    host, port = server.inbound
    client = await sidecar_process(
        "web", upstream.port, config={"upstreams": {"reviews": {"endpoints": [f"{host}:{port}"]}}}
    )
    return client, server


async def _watch_peak(procs: list[SidecarProcess], peaks: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for i, proc in enumerate(procs):
            peaks[i] = max(peaks[i], proc.rss_bytes())
        await asyncio.sleep(0.02)


async def test_100_mib_upload_and_download_stream_through_two_sidecars_with_flat_rss(
    upstream: ScriptedUpstream, sidecar_process: Callable[..., Awaitable[SidecarProcess]]
) -> None:
    client, server = await _pair(upstream, sidecar_process)
    base = url(client.outbound)
    headers = {"Host": "reviews"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as session:
        async with session.get(f"{base}/warm", headers=headers) as response:  # pools, imports
            assert response.status == 200
        procs = [client, server]
        baseline = [p.rss_bytes() for p in procs]
        peaks = list(baseline)
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_peak(procs, peaks, stop))

        async def body() -> AsyncIterator[bytes]:
            chunk = b"u" * MIB
            for _ in range(TOTAL_MIB):
                yield chunk

        try:
            async with session.post(f"{base}/sink", data=body(), headers=headers) as response:
                assert response.status == 200
                assert (await response.json())["bytes"] == TOTAL_MIB * MIB
            received = 0
            async with session.get(f"{base}/stream?mb={TOTAL_MIB}", headers=headers) as response:
                assert response.status == 200
                async for chunk in response.content.iter_any():
                    received += len(chunk)
            assert received == TOTAL_MIB * MIB
        finally:
            stop.set()
            await watcher
    growth = [peak - before for peak, before in zip(peaks, baseline, strict=True)]
    assert max(growth) < MAX_GROWTH_BYTES, f"RSS growth per sidecar: {growth}"
