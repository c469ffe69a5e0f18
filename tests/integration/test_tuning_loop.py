"""The closed tuning loop on a loopback mesh: real control plane, collector and sidecars.

The front sidecar calls two back instances that answer 503 to every 20th request. The spans
reach the store through the collector; the retry suggestion is accepted, pushed as a new policy
version, ACKed by the sidecar, and the verification after rollout finds the edge better.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from analytics.main import create_app
from analytics.settings import ApiTokenSpec, BootstrapTokenSpec, Settings
from analytics.tuning.service import TuningOptions
from analytics.up import HttpServerComponent
from collector.app import CollectorComponent, CollectorSettings
from collector.processors.batch import BatchConfig
from collector.store import Store
from sidecar.app import Sidecar
from tests.integration.conftest import ScriptedUpstream, Step, url
from tests.integration.test_mesh_controlplane import OPS, TOKENS

OPTIONS = TuningOptions(window_s=120, settle_s=0.0, verify_window_s=3.0, bucket_s=0.5)
FRONT: dict[str, Any] = {
    "service": "front",
    "upstreams": {"back": {"lb": "round_robin", "outlier": None}},
    "routes": [
        {"name": "to-back", "match": {"hosts": ["back"]}, "destinations": [{"upstream": "back"}]}
    ],
}


class Loop:
    """Collector + analytics (control plane, suggestions API) on loopback ports."""

    def __init__(self, store: Store, data: Path) -> None:
        settings = Settings(
            store_url=store.url,
            data_dir=data,
            http_port=0,
            api_tokens=(ApiTokenSpec.parse(f"ops:operator:{OPS}"),),
            bootstrap_tokens=tuple(
                BootstrapTokenSpec.parse(f"default/{svc}:{tok}") for svc, tok in TOKENS.items()
            ),
            watch_timeout_s=2.0,
            store_sync_interval_s=0.2,
        )
        app = create_app(settings, store=store)
        app.state.tuning_options = OPTIONS
        self.http = HttpServerComponent("analytics", app, "127.0.0.1", 0, graceful_s=1.0)
        batch = BatchConfig(max_age_s=0.1)
        self.collector = CollectorComponent(
            CollectorSettings(data / "spool", otlp_http_port=0, otlp_grpc_port=0, batch=batch),
            store,
        )
        self.store = store

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"authorization": f"Bearer {OPS}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.request(method, self.url + path, json=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json()


@pytest.fixture
async def loop(store: Store, tmp_path: Path) -> AsyncIterator[Loop]:
    lp = Loop(store, tmp_path / "data")
    await lp.collector.start()
    await lp.http.start()
    yield lp
    await lp.http.shutdown()
    await lp.collector.shutdown()


async def _sidecar(
    sidecars: Callable[..., Awaitable[Sidecar]],
    lp: Loop,
    tmp: Path,
    service: str,
    port: int,
    instance: str,
) -> Sidecar:
    return await sidecars(
        service, port, control_plane_url=lp.url, bootstrap_token=TOKENS[service],
        instance=instance, state_dir=str(tmp / "state" / instance),
        collector_url=lp.collector.addresses()["otlp-http"], telemetry_export_interval_s=0.1,
        cp_watch_timeout_s=2.0, cp_heartbeat_s=0.3, cp_backoff_max_s=0.4, initial_sync_s=5.0,
    )  # fmt: skip


def _every_20th_fails(app: ScriptedUpstream) -> None:
    app.script.extend(Step(503) if i % 20 == 7 else Step() for i in range(5000))


async def _traffic(front: Sidecar, seconds: float, rps: int = 80) -> list[int]:
    assert front.addresses is not None
    target = url(front.addresses.outbound) + "/items"
    statuses: list[int] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def one() -> None:
            async with session.get(target, headers={"host": "back"}) as resp:
                await resp.read()
                statuses.append(resp.status)

        for _ in range(int(seconds * rps / 10)):
            await asyncio.gather(*(one() for _ in range(10)))
            await asyncio.sleep(10 / rps)
    return statuses


async def _spans_stored(store: Store, at_least: int) -> None:
    """At least `at_least` of front's client spans stored, then none more for 1.5 s. (With
    retries there are more attempt spans than requests: a call whose failed first try was
    stored but not yet its retry counted as failed, and the verdict came out 'same' in a
    fresh-clone CI run on a loaded machine.)"""
    sql = (
        "SELECT count() AS n FROM otel_traces WHERE ScopeName = 'meshlens.sidecar' "
        "AND SpanKind = 'Client' AND ServiceName = 'front'"
    )
    for _ in range(200):
        stored = int((await store.query(sql))[0]["n"])
        if stored >= at_least:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"fewer than {at_least} sidecar spans reached the store")
    quiet = 0
    for _ in range(100):  # (bounded: 10 s)
        await asyncio.sleep(0.1)
        now = int((await store.query(sql))[0]["n"])
        quiet = quiet + 1 if now == stored else 0
        stored = now
        if quiet >= 15:
            return


async def _acked(lp: Loop, version: int) -> None:
    for _ in range(200):
        _, fleet = await lp.call("GET", "/api/v1/controlplane/fleet")
        entry = next((e for e in fleet if e["instance"] == "front-1"), None)
        if entry is not None and entry["acked_version"] == version:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"front-1 never ACKed version {version}")


async def test_transient_503s_get_a_retry_that_is_pushed_acked_and_verified(
    loop: Loop,
    sidecars: Callable[..., Awaitable[Sidecar]],
    upstream_factory: Callable[..., Awaitable[ScriptedUpstream]],
    tmp_path: Path,
) -> None:
    lp = loop
    status, _ = await lp.call(
        "PUT", "/api/v1/controlplane/policies/front", {"document": FRONT, "reason": "start"}
    )
    assert status == 201
    backs = [await upstream_factory(f"back-{i}") for i in (1, 2)]
    for app in backs:
        _every_20th_fails(app)
        await _sidecar(sidecars, lp, tmp_path, "back", app.port, f"back-{app.name[-1]}")
    front_app = await upstream_factory("front")
    front = await _sidecar(sidecars, lp, tmp_path, "front", front_app.port, "front-1")
    await _acked(lp, 1)
    assert front.endpoints is not None
    for _ in range(100):
        if len(front.endpoints.endpoints("back")) == 2:
            break
        await asyncio.sleep(0.05)

    before = await _traffic(front, 3.0)
    assert 0 < before.count(503) < 0.1 * len(before)  # no retries yet: the 503s get through
    await _spans_stored(lp.store, len(before))

    status, refreshed = await lp.call("POST", "/api/v1/suggestions/refresh")
    assert status == 200, refreshed
    status, listed = await lp.call("GET", "/api/v1/suggestions?caller=front&state=proposed")
    (retry,) = [s for s in listed["suggestions"] if s["kind"] == "retry"]
    assert retry["route"] == "to-back"
    assert retry["evidence"]["endpoints_failing"] == 2

    status, detail = await lp.call("GET", f"/api/v1/suggestions/{retry['id']}")
    assert detail["replay"]["rescued"] > 0

    status, accepted = await lp.call(
        "POST",
        f"/api/v1/suggestions/{retry['id']}/accept",
        {"mode": "enforce", "reason": "transient 503s"},
    )
    assert status == 200, accepted
    assert accepted["state"] == "enforcing" and accepted["policy_version"] == 2
    await _acked(lp, 2)
    assert front.control is not None
    assert front.control.active.version == "2"

    after = await _traffic(front, 3.5)
    assert after.count(503) < before.count(503)  # retried on the other try
    await _spans_stored(lp.store, len(before) + len(after))

    status, verified = await lp.call("POST", "/api/v1/suggestions/verify")
    assert status == 200, verified
    (judged,) = verified["judged"]
    assert judged["state"] == "verified", judged["verification"]
    assert judged["verification"]["outcome"] == "better", judged["verification"]
    status, audit = await lp.call(
        "GET", f"/api/v1/controlplane/audit?target=suggestion/{retry['id']}"
    )
    assert {"suggestion.accepted", "suggestion.enforcing", "suggestion.verified"} <= {
        e["action"] for e in audit
    }
