from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from sidecar.control import ApplyResult
from sidecar.cpclient import (
    ControlPlaneClient,
    ControlPlaneError,
    ControlPlaneSync,
    ControlPlaneUnavailable,
    Registration,
    WatchUpdate,
    endpoints_from_watch,
)
from sidecar.http import Endpoint
from sidecar.upstream import UpstreamPool
from tests.cpstub import ScriptedControlPlane
from tests.fakes import RecordingSleep, SequenceRandom

HEARTBEAT_S = 1000.0  # recognisable among the recorded sleeps


async def refuse(factory: Callable[[], Any], host: str, port: int) -> tuple[Any, Any]:
    """A connector for a network where the control plane is down."""
    raise ConnectionRefusedError(111, "Connection refused")


def test_watch_endpoints_use_the_inbound_port_and_drop_bad_entries() -> None:
    table = endpoints_from_watch(
        {
            "api": [
                {
                    "instance": "api-1",
                    "address": "10.0.0.1",
                    "ports": {"admin": 15000, "inbound": 15006},
                    "labels": {"version": "v2", "az": "a"},
                },
                {"instance": "api-2", "address": "10.0.0.2", "ports": {"http": 8080}},
                {"instance": "api-3", "address": "10.0.0.3", "ports": {}},  # no port
                {"instance": "api-4", "ports": {"inbound": 1}},  # no address
                {"instance": "api-5", "address": "10.0.0.5", "ports": {"inbound": 70000}},
            ],
            "db": [],
        }
    )
    assert table == {
        "api": (
            Endpoint(
                "10.0.0.1",
                15006,
                service="api",
                instance="api-1",
                labels=(("az", "a"), ("version", "v2")),
            ),
            Endpoint("10.0.0.2", 8080, service="api", instance="api-2"),
        ),
        "db": (),
    }


def test_registration_body_follows_the_protocol() -> None:
    reg = Registration(
        "web", "web-1", "127.0.0.1", "shop", ports={"inbound": 15006}, labels={"version": "v1"}
    )
    assert reg.body(["api"], 4) == {
        "namespace": "shop",
        "service": "web",
        "instance": "web-1",
        "address": "127.0.0.1",
        "ports": {"inbound": 15006},
        "labels": {"version": "v1"},
        "upstreams": ["api"],
        "running_version": 4,
    }


@pytest.mark.parametrize("url", ["https://cp:8686", "cp:8686", "http://", "ftp://cp"])
def test_the_client_accepts_only_plain_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match="http://host"):
        ControlPlaneClient(url, pool=UpstreamPool())


def test_backoff_is_exponential_capped_and_jittered() -> None:
    client = ControlPlaneClient("http://127.0.0.1:1", pool=UpstreamPool())
    sync = ControlPlaneSync(
        client,
        Registration("web", "web-1", "127.0.0.1"),
        apply=lambda u, new: ApplyResult(True),
        backoff_base_s=0.5,
        backoff_max_s=4.0,
        random=SequenceRandom([0.0, 0.999999]),
    )
    low = [sync.backoff_s(n) for n in (1, 2, 3, 4, 5)]  # random 0.0, 0.99.. alternating
    assert low[0] == pytest.approx(0.25)  # ceiling 0.5, lowest jitter
    assert low[1] == pytest.approx(1.0, rel=1e-5)  # ceiling 1.0, highest jitter
    assert low[2] == pytest.approx(1.0)  # ceiling 2.0
    assert low[3] == pytest.approx(4.0, rel=1e-5)  # ceiling 4.0
    assert low[4] == pytest.approx(2.0)  # capped at 4.0
    assert all(0 < d <= 4.0 for d in low)


async def test_an_unreachable_control_plane_raises_unavailable() -> None:
    pool = UpstreamPool(connect=refuse)
    client = ControlPlaneClient("http://127.0.0.1:1", pool=pool, bootstrap_token="t" * 20)
    with pytest.raises(ControlPlaneUnavailable, match="Connection refused"):
        await client.request("GET", "/fleet")
    await pool.close()


async def test_the_watch_loop_backs_off_while_the_control_plane_is_down() -> None:
    pool = UpstreamPool(connect=refuse)
    client = ControlPlaneClient("http://127.0.0.1:1", pool=pool, bootstrap_token="t" * 20)
    sleep = RecordingSleep()
    applied: list[WatchUpdate] = []

    def apply(update: WatchUpdate, new: bool) -> ApplyResult:
        applied.append(update)
        return ApplyResult(True)

    sync = ControlPlaneSync(
        client,
        Registration("web", "web-1", "127.0.0.1"),
        apply=apply,
        heartbeat_interval_s=HEARTBEAT_S,
        backoff_base_s=0.1,
        backoff_max_s=0.8,
        sleep=sleep,
        random=SequenceRandom([0.5]),
    )
    sync.start()
    for _ in range(1000):
        if len([s for s in sleep.calls if s != HEARTBEAT_S]) >= 6:
            break
        await asyncio.sleep(0)
    await sync.stop(deregister=True)  # never registered: nothing to deregister

    backoffs = [s for s in sleep.calls if s != HEARTBEAT_S][:6]
    assert backoffs == pytest.approx([0.075, 0.15, 0.3, 0.6, 0.6, 0.6])
    assert not sync.connected and not sync.synced.is_set()
    assert sync.last_error is not None and "Connection refused" in sync.last_error
    assert sync.status()["registered"] is False
    assert applied == []
    await pool.close()


def test_watch_endpoints_keep_their_identity_only_for_an_mtls_caller_and_mtls_peers() -> None:
    spiffe = "spiffe://mesh.test/ns/shop/sa/api"
    mesh = {"security.istio.io/tlsMode": "istio"}
    raw = {
        "api": [
            {"instance": "a", "address": "10.0.0.1", "ports": {"inbound": 1}, "labels": mesh,
             "identity": spiffe},
            # a plaintext-only peer (--mtls off): never TLS, even from an mTLS caller
            {"instance": "b", "address": "10.0.0.2", "ports": {"inbound": 1}, "identity": spiffe},
        ]
    }  # fmt: skip

    with_mtls = endpoints_from_watch(raw, mtls=True)["api"]
    without = endpoints_from_watch(raw)["api"]

    assert [e.identity for e in with_mtls] == [spiffe, ""]
    assert [e.identity for e in without] == ["", ""]


REGISTERED = (200, b'{"lease_ttl_s": 3000}')


@pytest.mark.parametrize(
    "answer",
    [
        (200, b"null"),  # register: not an object
        (200, b"[1, 2]"),
        (200, b"[" * 100_000 + b"]" * 100_000),  # nested past the recursion limit
        (400, b'{"error": "bad", "problems": 5}'),  # problems not a list
        (400, b"[" * 100_000 + b"]" * 100_000),
    ],
)
async def test_odd_answers_never_end_the_heartbeat_or_watch_loops(
    answer: tuple[int, bytes],
) -> None:
    """Heartbeat 404 (lease gone) -> register again -> an odd answer: the loops log it and go
    on (the heartbeat loop ended for good, so the lease lapsed again and again)."""
    cp = ScriptedControlPlane(
        {
            "/api/v1/controlplane/instances/web-1/heartbeat": [(404, b"{}"), (200, b"{}")],
            "/api/v1/controlplane/instances": [REGISTERED, answer, REGISTERED],
            "/api/v1/controlplane/watch": [(204, b"")],
            "/api/v1/controlplane/ack": [(200, b"{}")],
        }
    )
    url = await cp.start()
    pool = UpstreamPool()
    client = ControlPlaneClient(url, pool=pool, bootstrap_token="t" * 20)
    sync = ControlPlaneSync(
        client,
        Registration("web", "web-1", "127.0.0.1"),
        apply=lambda update, new: ApplyResult(True),
        heartbeat_interval_s=0.01,
        watch_timeout_s=0.05,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
    )
    sync.start()
    try:
        for _ in range(500):  # (bounded: 5 s)
            beats = [p for p in cp.paths if p.endswith("/heartbeat")]
            if len(beats) >= 4 and all(not t.done() for t in sync._tasks):
                break
            await asyncio.sleep(0.01)
        assert all(not task.done() for task in sync._tasks), [t for t in sync._tasks if t.done()]
        assert len([p for p in cp.paths if p.endswith("/heartbeat")]) >= 4
    finally:
        await sync.stop(deregister=False)
        await pool.close()
        await cp.close()


async def test_an_error_answer_with_odd_problems_is_a_control_plane_error() -> None:
    cp = ScriptedControlPlane({"/": [(422, b'{"error": "invalid", "problems": 5}')]})
    url = await cp.start()
    pool = UpstreamPool()
    client = ControlPlaneClient(url, pool=pool, bootstrap_token="t" * 20)
    try:
        with pytest.raises(ControlPlaneError, match="422 invalid"):
            await client.call("GET", "/fleet")
    finally:
        await pool.close()
        await cp.close()
