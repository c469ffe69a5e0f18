"""Sidecars fed by the real control plane speak mTLS to each other: the pushed endpoints carry
the callee's SPIFFE id, the caller verifies it, and the callee's server span names the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.store import Store
from sidecar.app import Sidecar
from tests.integration.conftest import ScriptedUpstream, eventually, url
from tests.integration.pki import refused
from tests.integration.test_mesh_controlplane import FRONT_V1, TOKENS, Plane
from tests.integration.test_sidecar_telemetry import OtlpSink, _attrs, sink

__all__ = ["sink"]  # the OTLP receiver fixture, shared with test_sidecar_telemetry

FRONT_ID = "spiffe://cluster.local/ns/default/sa/front"
BACK_ID = "spiffe://cluster.local/ns/default/sa/back"


@pytest.fixture
async def plane(store: Store, tmp_path: Path) -> AsyncIterator[Plane]:
    p = Plane(store, tmp_path / "cp")
    await p.start()
    yield p
    await p.stop()


async def _strict(
    sidecars: Callable[..., Awaitable[Sidecar]],
    plane: Plane,
    tmp_path: Path,
    service: str,
    app_port: int,
    collector: str,
) -> Sidecar:
    return await sidecars(
        service,
        app_port,
        control_plane_url=plane.url,
        bootstrap_token=TOKENS[service],
        instance=f"{service}-1",
        state_dir=str(tmp_path / "state" / service),
        mtls="strict",
        collector_url=collector,
        cp_watch_timeout_s=2.0,
        cp_heartbeat_s=0.3,
        cp_backoff_max_s=0.4,
        initial_sync_s=5.0,
    )  # fmt: skip


async def test_strict_sidecars_from_the_control_plane_talk_mtls_and_refuse_plaintext(
    plane: Plane,
    sink: OtlpSink,
    sidecars: Callable[..., Awaitable[Sidecar]],
    upstream_factory: Callable[..., Awaitable[ScriptedUpstream]],
    tmp_path: Path,
) -> None:
    await plane.put_policy("front", FRONT_V1)
    back_app = await upstream_factory("back")
    back = await _strict(sidecars, plane, tmp_path, "back", back_app.port, sink.url)
    front_app = await upstream_factory("front")
    front = await _strict(sidecars, plane, tmp_path, "front", front_app.port, sink.url)
    assert front.endpoints is not None and back.addresses is not None and front.addresses
    await eventually(lambda: len(front.endpoints.endpoints("back")) == 1)  # type: ignore[union-attr]
    (endpoint,) = front.endpoints.endpoints("back")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(
            url(front.addresses.outbound) + "/hello", headers={"host": "back"}
        ) as resp:
            status = resp.status
    plaintext_refused = await refused(back.addresses.inbound, None)
    await back.telemetry.flush()

    assert endpoint.identity == BACK_ID
    assert status == 200 and len(back_app.seen) == 1
    servers = [s for svc, s in sink.spans if svc == "back" and s.kind == Span.SPAN_KIND_SERVER]
    peers: list[Any] = [_attrs(s).get("meshlens.peer_identity") for s in servers]
    assert peers == [FRONT_ID]
    assert plaintext_refused
    assert len(back_app.seen) == 1
