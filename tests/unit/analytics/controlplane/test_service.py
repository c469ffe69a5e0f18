from __future__ import annotations

import asyncio
from pathlib import Path

from analytics.controlplane.auth import Principal
from analytics.controlplane.registry import Registration
from analytics.controlplane.service import ControlPlane
from collector.store import open_store
from tests.unit.analytics.controlplane.helpers import ManualClock, make_settings, never

ALICE = Principal("operator", "token:alice")
ORDERS = Principal("bootstrap", "bootstrap:default/orders", "default", "orders")
ORDERS_1 = Registration("default", "orders", "orders-1", "10.0.0.1", {"inbound": 15006})


class Ticker:
    """An injected sleep that returns only when the test lets one tick through."""

    def __init__(self) -> None:
        self.ticks: asyncio.Queue[None] = asyncio.Queue()
        self.waiting = 0

    async def sleep(self, seconds: float) -> None:
        self.waiting += 1
        await self.ticks.get()

    async def tick(self) -> None:
        """Let the longest-parked loop run one round, and wait until it parks again."""
        target = self.waiting + 1
        self.ticks.put_nowait(None)
        async with asyncio.timeout(5):
            while self.waiting < target:  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.01)


async def test_background_sweep_expires_leases_and_stops_on_shutdown(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    clock = ManualClock(0.0)
    ticker = Ticker()
    store = open_store(settings.store_url)
    try:
        plane = await ControlPlane.open(settings, store, clock=clock, sleep=ticker.sleep)
        plane.start()
        plane.register(ORDERS, ORDERS_1)
        clock.advance(settings.lease_ttl_s + 1)
        await asyncio.sleep(0)  # both loops start and park: sweep first, then store sync
        await ticker.tick()  # one sweep round
        await plane.shutdown()
        events = await store.query("SELECT event FROM meshlens_cp_instances ORDER BY ts, event")
    finally:
        await store.close()
    assert sorted(e["event"] for e in events) == ["expire", "register"]


async def test_a_replica_picks_up_policy_written_by_another_and_wakes_its_watchers(
    tmp_path: Path,
) -> None:
    store = open_store(f"chdb://{tmp_path}/ch")
    try:
        first = await ControlPlane.open(make_settings(tmp_path / "a"), store, sleep=never)
        second = await ControlPlane.open(make_settings(tmp_path / "b"), store, sleep=never)
        second.register(ORDERS, ORDERS_1)
        initial = await second.watch(ORDERS, "orders", "orders-1", None, None, 1.0)
        assert initial is not None
        pending = asyncio.create_task(
            second.watch(ORDERS, "orders", "orders-1", 0, initial.revision, 5.0)
        )
        await first.policies.put(ALICE, "orders", {"service": "orders"}, reason="from a")

        assert await second.policies.refresh() is True
        pushed = await asyncio.wait_for(pending, 5.0)
        assert await second.policies.refresh() is False
    finally:
        await store.close()
    assert pushed is not None
    assert (pushed.version, pushed.document) == (1, {"service": "orders", "version": "1"})


async def test_background_loops_survive_a_store_outage(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    ticker = Ticker()
    store = open_store(settings.store_url)
    plane = await ControlPlane.open(settings, store, sleep=ticker.sleep)
    plane.start()
    plane.register(ORDERS, ORDERS_1)
    await store.close()  # from now on every store call fails as unavailable

    for _ in range(4):  # sweep, sync, sweep, sync
        await ticker.tick()
    await plane.shutdown()

    assert plane.background_failures == 2  # the two store syncs; the sweep spools its rows
    assert len(plane.instance_events) == 1
