"""A loopback mesh (apps + in-process sidecars) fed by the real control plane (analytics app).

Rollout without dropping in-flight requests, NACK of a bad version, dead instances leaving the
endpoint sets, and a control-plane outage: traffic on the last good config, a sidecar restarted
during the outage starting from its persisted config, and everyone re-syncing afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from analytics.settings import ApiTokenSpec, BootstrapTokenSpec, Settings
from analytics.up import AnalyticsComponent
from collector.store import Store
from sidecar.app import Sidecar
from tests.integration.conftest import ScriptedUpstream, Step, eventually, url

OPS = "ops-token-0123456789abcdef"
TOKENS = {"front": "front-token-0123456789abc", "back": "back-token-0123456789abcd"}
API = "/api/v1/controlplane"


class Plane:
    """The analytics app (control plane) on loopback; stop() and start() keep its port."""

    def __init__(self, store: Store, data: Path) -> None:
        self.store = store
        self.port = 0
        self.settings = Settings(
            store_url=store.url,
            data_dir=data,
            http_port=0,
            api_tokens=(ApiTokenSpec.parse(f"ops:operator:{OPS}"),),
            bootstrap_tokens=tuple(
                BootstrapTokenSpec.parse(f"default/{svc}:{tok}") for svc, tok in TOKENS.items()
            ),
            lease_ttl_s=1.5,
            sweep_interval_s=0.1,
            watch_timeout_s=2.0,
            store_sync_interval_s=0.2,
        )
        self.component: AnalyticsComponent | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        settings = replace(self.settings, http_port=self.port)
        self.component = AnalyticsComponent(settings, self.store, graceful_s=1.0)
        await self.component.start()
        self.port = self.component.port

    async def stop(self) -> None:
        if self.component is not None:
            await self.component.shutdown()
            self.component = None

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"authorization": f"Bearer {OPS}"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, self.url + API + path, json=body, headers=headers) as resp,
        ):
            data = await resp.json() if resp.status != 204 else None
            return resp.status, data

    async def put_policy(self, service: str, document: dict[str, Any]) -> int:
        status, body = await self.call(
            "PUT", f"/policies/{service}", {"document": document, "reason": "test"}
        )
        assert status == 201, body
        return int(body["version"])

    async def fleet(self) -> dict[str, dict[str, Any]]:
        status, body = await self.call("GET", "/fleet")
        assert status == 200, body
        return {entry["instance"]: entry for entry in body}


@pytest.fixture
async def plane(store: Store, tmp_path: Path) -> AsyncIterator[Plane]:
    p = Plane(store, tmp_path / "cp")
    await p.start()
    yield p
    await p.stop()


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s}s")


MakeSidecar = Callable[..., Awaitable[Sidecar]]


async def mesh_sidecar(
    sidecars: MakeSidecar, plane: Plane, tmp_path: Path, service: str, app: int, instance: str
) -> Sidecar:
    return await sidecars(
        service,
        app,
        control_plane_url=plane.url,
        bootstrap_token=TOKENS[service],
        instance=instance,
        state_dir=str(tmp_path / "state" / instance),
        labels=(("version", "v1"),),
        cp_watch_timeout_s=2.0,
        cp_heartbeat_s=0.3,
        cp_backoff_max_s=0.4,
        initial_sync_s=5.0,
    )


async def get(session: aiohttp.ClientSession, sidecar: Sidecar, host: str) -> tuple[int, str]:
    assert sidecar.addresses is not None
    async with session.get(
        url(sidecar.addresses.outbound) + "/hello", headers={"host": host}
    ) as resp:
        return resp.status, await resp.text()


FRONT_V1: dict[str, Any] = {
    "service": "front",
    "upstreams": {"back": {"lb": "round_robin", "outlier": None}},
}


async def in_sync(plane: Plane, instances: set[str]) -> bool:
    fleet = await plane.fleet()
    return instances <= fleet.keys() and all(fleet[i]["in_sync"] for i in instances)


async def test_policies_and_endpoints_reach_every_sidecar_without_dropping_requests(
    plane: Plane,
    sidecars: MakeSidecar,
    upstream_factory: Callable[..., Awaitable[ScriptedUpstream]],
    tmp_path: Path,
) -> None:
    back_apps = [await upstream_factory(f"back-{i}") for i in (1, 2)]
    await plane.put_policy("front", FRONT_V1)
    back = [
        await mesh_sidecar(sidecars, plane, tmp_path, "back", app.port, f"back-{i}")
        for i, app in enumerate(back_apps, 1)
    ]
    front_app = await upstream_factory("front")
    front = await mesh_sidecar(sidecars, plane, tmp_path, "front", front_app.port, "front-1")

    # registered, v1 applied and ACKed; the front learns both back instances (inbound ports)
    assert front.control.active.version == "1"
    assert front.endpoints is not None
    back_ports = {s.addresses.inbound[1] for s in back if s.addresses is not None}
    await eventually(
        lambda: {e.port for e in front.endpoints.endpoints("back")} == back_ports  # type: ignore[union-attr]
    )
    await until(lambda: in_sync(plane, {"front-1", "back-1", "back-2"}))
    fleet = await plane.fleet()
    assert fleet["front-1"]["acked_version"] == 1
    assert fleet["back-1"]["labels"] == {"version": "v1"}

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(4):
            status, _ = await get(session, front, "back")
            assert status == 200
        assert all(app.seen for app in back_apps)  # round robin over both

        # a new version arrives while slow requests are in flight: none is dropped
        for app in back_apps:
            app.default = Step(delay_s=2.0)
        seen = sum(len(app.seen) for app in back_apps)
        in_flight = [asyncio.create_task(get(session, front, "back")) for _ in range(6)]
        await eventually(lambda: sum(len(app.seen) for app in back_apps) == seen + 6)
        v2 = {
            **FRONT_V1,
            "routes": [
                {
                    "name": "back",
                    "destinations": [{"upstream": "back"}],
                    "timeout": {"request_s": 5},
                }
            ],
        }
        assert await plane.put_policy("front", v2) == 2
        back_v1 = {"service": "back", "inbound": {"timeout": {"request_s": 7}}}
        assert await plane.put_policy("back", back_v1) == 1
        await until(lambda: in_sync(plane, {"front-1", "back-1", "back-2"}))
        assert not any(task.done() for task in in_flight)  # swapped under them
        results = await asyncio.gather(*in_flight)
        assert [status for status, _ in results] == [200] * 6
        assert front.control.active.version == "2"
        assert all(s.control.active.version == "1" for s in back)
        assert front.config_doc()["control_plane"]["acks"] >= 2  # type: ignore[index]

        # an instance that dies without deregistering leaves the endpoint set (lease expiry)
        for app in back_apps:
            app.default = Step()
        await back[1].stop()
        await eventually(lambda: len(front.endpoints.endpoints("back")) == 1, timeout_s=6)  # type: ignore[union-attr]
        for _ in range(4):
            assert (await get(session, front, "back"))[0] == 200

        # a drained instance deregisters at once
        await back[0].drain()
        await eventually(lambda: front.endpoints.endpoints("back") == (), timeout_s=3)  # type: ignore[union-attr]
        assert "back-1" not in await plane.fleet()


async def test_an_invalid_version_is_nacked_and_the_last_good_one_keeps_running(
    plane: Plane,
    sidecars: MakeSidecar,
    upstream_factory: Callable[..., Awaitable[ScriptedUpstream]],
    tmp_path: Path,
) -> None:
    back_app = await upstream_factory("back")
    await mesh_sidecar(sidecars, plane, tmp_path, "back", back_app.port, "back-1")
    await plane.put_policy("front", FRONT_V1)
    front_app = await upstream_factory("front")
    front = await mesh_sidecar(sidecars, plane, tmp_path, "front", front_app.port, "front-1")
    await eventually(lambda: len(front.endpoints.endpoints("back")) == 1)  # type: ignore[union-attr]
    assert front.addresses is not None

    # valid for the control plane, but it points at this sidecar's own listener: NACK
    own = f"127.0.0.1:{front.addresses.outbound[1]}"
    upstreams = {**FRONT_V1["upstreams"], "loop": {"endpoints": [own]}}
    bad = {**FRONT_V1, "upstreams": upstreams}
    assert await plane.put_policy("front", bad) == 2

    async def nacked() -> bool:
        entry = (await plane.fleet())["front-1"]
        return entry["nack"] is not None and entry["nack"]["version"] == 2

    await until(nacked)
    entry = (await plane.fleet())["front-1"]
    assert "own listener" in entry["nack"]["error"]
    assert entry["acked_version"] == 1 and entry["in_sync"] is False
    assert front.control.active.version == "1"
    assert front.control.rejected == 1
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        assert (await get(session, front, "back"))[0] == 200

    # the next good version is applied again
    assert await plane.put_policy("front", {**FRONT_V1, "version": "ignored"}) == 3
    await until(lambda: in_sync(plane, {"front-1"}))
    assert front.control.active.version == "3"


async def test_traffic_survives_a_control_plane_outage_and_everyone_resyncs(
    plane: Plane,
    sidecars: MakeSidecar,
    upstream_factory: Callable[..., Awaitable[ScriptedUpstream]],
    tmp_path: Path,
) -> None:
    back_app = await upstream_factory("back")
    back = await mesh_sidecar(sidecars, plane, tmp_path, "back", back_app.port, "back-1")
    await plane.put_policy("front", FRONT_V1)
    front_app = await upstream_factory("front")
    front = await mesh_sidecar(sidecars, plane, tmp_path, "front", front_app.port, "front-1")
    await eventually(lambda: len(front.endpoints.endpoints("back")) == 1)  # type: ignore[union-attr]
    await until(lambda: in_sync(plane, {"front-1", "back-1"}))

    await plane.stop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        # traffic keeps flowing on the last good config
        for _ in range(5):
            assert (await get(session, front, "back"))[0] == 200
        await eventually(lambda: front.cp is not None and not front.cp.connected, timeout_s=5)

        # a sidecar restarted during the outage starts from its persisted config
        await front.stop()
        restarted = await mesh_sidecar(
            sidecars, plane, tmp_path, "front", front_app.port, "front-1"
        )
        assert restarted.control.active.source.startswith("persisted:")
        assert restarted.control.active.version == "1"
        assert restarted.endpoints is not None
        assert len(restarted.endpoints.endpoints("back")) == 1
        for _ in range(3):
            assert (await get(session, restarted, "back"))[0] == 200

        # the control plane comes back (same port, same store): everyone re-registers
        await plane.start()
        await until(lambda: in_sync(plane, {"front-1", "back-1"}))
        fleet = await plane.fleet()
        assert fleet["front-1"]["acked_version"] == 1
        assert restarted.cp is not None and restarted.cp.connected

        # ... and follows new versions again
        assert await plane.put_policy("front", {**FRONT_V1, "routes": []}) == 2
        await until(lambda: in_sync(plane, {"front-1"}))
        assert restarted.control.active.version == "2"
        assert back.control.active.source == "control-plane"
        assert (await get(session, restarted, "back"))[0] == 200
