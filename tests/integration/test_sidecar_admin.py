"""The admin server of a running sidecar: health, readiness, metrics, config, stats, drain."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from sidecar.app import Sidecar
from tests.integration.conftest import ScriptedUpstream, SidecarProcess, url

pytestmark = pytest.mark.timeout(30)


async def test_admin_endpoints_report_health_metrics_config_and_stats(
    upstream: ScriptedUpstream, sidecars: Callable[..., Awaitable[Sidecar]]
) -> None:
    config = {"version": "7", "upstreams": {"app": {"endpoints": [f"127.0.0.1:{upstream.port}"]}}}
    sidecar = await sidecars("web", upstream.port, config=config)
    assert sidecar.addresses is not None
    admin = url(sidecar.addresses.admin)
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url(sidecar.addresses.outbound) + "/x", headers={"Host": "app"}
        ) as r:
            assert r.status == 200
        async with session.get(f"{admin}/healthz") as r:
            assert r.status == 200
        async with session.get(f"{admin}/ready") as r:
            assert r.status == 200
        async with session.get(f"{admin}/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            metrics = await r.text()
        async with session.get(f"{admin}/config") as r:
            config_doc = await r.json()
        async with session.get(f"{admin}/stats") as r:
            stats = await r.json()
        async with session.post(f"{admin}/drain") as r:
            assert r.status == 202
        await sidecar.wait_stopped()
    assert 'reporter="source"' in metrics
    assert "istio_requests_total" in metrics
    assert 'meshlens_sidecar_config_info{version="7"} 1' in metrics
    assert 'meshlens_sidecar_config_updates_total{result="applied"} 1' in metrics
    assert config_doc["version"] == "7"
    assert config_doc["service"] == "web"
    assert "app" in config_doc["outbound"]["config"]["upstreams"]
    assert stats["listeners"]["outbound"]["requests"] == 1
    assert "app" in stats["outbound"]["upstreams"]
    assert stats["upstream_pool"]["connections_opened"] == 1


async def test_the_sidecar_raises_its_open_files_limit_and_serves_past_the_old_one(
    upstream: ScriptedUpstream, sidecar_process: Callable[..., Awaitable[SidecarProcess]]
) -> None:
    """Started with a soft limit of 256 descriptors (hard 4,096): it raises the soft one to
    the hard one, so 600 idle client connections do not make it reset the next (it did, with
    no log line), and /stats shows the limit and the descriptors open."""
    sidecar = await sidecar_process("web", upstream.port, nofile=(256, 4096))
    idle = [await asyncio.open_connection(*sidecar.outbound) for _ in range(600)]
    try:
        target = f"http://127.0.0.1:{upstream.port}/after"
        async with aiohttp.ClientSession() as session:
            async with session.get(target, proxy=url(sidecar.outbound)) as r:
                assert r.status == 200
            async with session.get(url(sidecar.admin) + "/stats") as r:
                process = (await r.json())["process"]
        assert process["fd_limit"] == 4096
        assert process["open_fds"] >= 600
    finally:
        for _, writer in idle:
            writer.close()
