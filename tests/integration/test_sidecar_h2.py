"""HTTP/2 downstream: h2c with prior knowledge (httpx), h2c via Upgrade (raw `h2`), many streams.

The upstream app speaks HTTP/1.1 (`app_protocol: http1` / `protocol: http1`), so these tests also
cover the translation h2 -> HTTP/1.1, and h2 between two sidecars (one pooled connection).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from sidecar.app import Sidecar
from tests.integration.conftest import ScriptedUpstream

pytestmark = pytest.mark.timeout(30)

Sidecars = Callable[..., Awaitable[Sidecar]]


def _base(address: tuple[str, int]) -> str:
    return f"http://{address[0]}:{address[1]}"


async def _pair(sidecars: Sidecars, app_port: int) -> tuple[Sidecar, Sidecar]:
    """Client sidecar -> (h2) -> server sidecar -> (HTTP/1.1) -> app."""
    server = await sidecars("reviews", app_port, config={"inbound": {"app_protocol": "http1"}})
    assert server.addresses is not None
    host, port = server.addresses.inbound
    client = await sidecars(
        "web",
        1,
        config={"upstreams": {"reviews": {"endpoints": [f"{host}:{port}"], "protocol": "h2"}}},
    )
    return client, server


async def test_prior_knowledge_client_reaches_http1_app(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    sidecar = await sidecars(
        "web",
        1,
        config={
            "upstreams": {"app": {"endpoints": [f"127.0.0.1:{upstream.port}"], "protocol": "http1"}}
        },
    )
    assert sidecar.addresses is not None
    async with httpx.AsyncClient(http1=False, http2=True, timeout=5) as client:
        response = await client.post(
            _base(sidecar.addresses.outbound) + "/orders?x=1",
            headers={"host": "app", "x-custom": "yes"},
            content=b"z" * 5000,
        )
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    data = response.json()
    assert data["path"] == "/orders?x=1"
    assert data["body_len"] == 5000
    assert data["headers"]["x-custom"] == "yes"
    assert data["headers"]["host"] == "app"
    assert len(data["headers"]["x-request-id"]) == 36


async def test_hundred_concurrent_streams_on_one_connection_through_two_sidecars(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    client_sidecar, server_sidecar = await _pair(sidecars, upstream.port)
    assert client_sidecar.addresses is not None
    base = _base(client_sidecar.addresses.outbound)
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10, limits=limits) as client:

        async def one(i: int) -> dict[str, Any]:
            response = await client.get(f"{base}/item/{i}", headers={"host": "reviews"})
            assert response.status_code == 200
            assert response.http_version == "HTTP/2"
            result: dict[str, Any] = response.json()
            return result

        results = await asyncio.gather(*(one(i) for i in range(100)))
    assert sorted(r["path"] for r in results) == sorted(f"/item/{i}" for i in range(100))
    assert len(client_sidecar.outbound.connections) <= 1
    stats = client_sidecar.h2_upstream.stats()
    assert stats["streams"] == 100
    assert stats["connections_opened"] == 1  # every stream multiplexed on one h2 connection
    assert server_sidecar.inbound.requests_total >= 100


async def test_large_bodies_stream_both_ways_under_flow_control(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    client_sidecar, _ = await _pair(sidecars, upstream.port)
    assert client_sidecar.addresses is not None
    base = _base(client_sidecar.addresses.outbound)
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
        sent = await client.post(
            f"{base}/sink", headers={"host": "reviews"}, content=b"q" * (3 << 20)
        )
        assert sent.json() == {"bytes": 3 << 20}
        received = 0
        async with client.stream("GET", f"{base}/stream?mb=4", headers={"host": "reviews"}) as r:
            async for chunk in r.aiter_bytes():
                received += len(chunk)
    assert received == 4 << 20


async def test_h2c_upgrade_answers_the_upgrading_request_on_stream_one(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    sidecar = await sidecars(
        "web",
        1,
        config={
            "upstreams": {"app": {"endpoints": [f"127.0.0.1:{upstream.port}"], "protocol": "http1"}}
        },
    )
    assert sidecar.addresses is not None
    host, port = sidecar.addresses.outbound
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings_header = conn.initiate_upgrade_connection()
    assert settings_header is not None
    settings = settings_header.decode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            (
                "GET /up HTTP/1.1\r\nhost: app\r\nconnection: Upgrade, HTTP2-Settings\r\n"
                f"upgrade: h2c\r\nhttp2-settings: {settings}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(conn.data_to_send())
        status, body = None, b""
        done = False
        async with asyncio.timeout(5):
            while not done:
                data = await reader.read(65536)
                assert data, "connection closed before the response"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        assert event.stream_id == 1
                        status = dict(event.headers)[b":status"]
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, 1)
                    elif isinstance(event, h2.events.StreamEnded):
                        done = True
                writer.write(conn.data_to_send())
    finally:
        writer.close()
    assert status == b"200"
    assert json.loads(body)["path"] == "/up"


async def test_http1_clients_are_unaffected_on_the_same_listener(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    sidecar = await sidecars(
        "web", 1, config={"upstreams": {"app": {"endpoints": [f"127.0.0.1:{upstream.port}"]}}}
    )
    assert sidecar.addresses is not None
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(
            _base(sidecar.addresses.outbound) + "/plain", headers={"host": "app"}
        )
    assert response.http_version == "HTTP/1.1"
    assert response.json()["path"] == "/plain"
    assert sidecar.h2_upstream.stats()["streams"] == 0
