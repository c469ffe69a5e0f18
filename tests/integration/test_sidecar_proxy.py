"""The sidecar as an HTTP/1.1 proxy on loopback: real clients, real upstream, real sockets."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import requests

from sidecar.app import Sidecar
from sidecar.codec import HttpServer, ServerConfig
from sidecar.http import Request, Response
from tests.integration.conftest import ScriptedUpstream, raw_exchange, read_response, url

pytestmark = pytest.mark.timeout(30)

Sidecars = Callable[..., Awaitable[Sidecar]]


def _outbound(sidecar: Sidecar) -> tuple[str, int]:
    assert sidecar.addresses is not None
    return sidecar.addresses.outbound


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[Sidecar], None]:
    def set_proxy(sidecar: Sidecar) -> None:
        monkeypatch.setenv("HTTP_PROXY", url(_outbound(sidecar)))
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)

    return set_proxy


async def test_aiohttp_client_reaches_app_through_http_proxy_env(
    upstream: ScriptedUpstream, sidecars: Sidecars, proxy_env: Callable[[Sidecar], None]
) -> None:
    sidecar = await sidecars("client", upstream.port)
    proxy_env(sidecar)
    async with aiohttp.ClientSession(trust_env=True) as session:
        async with session.get(f"http://127.0.0.1:{upstream.port}/hello?x=1") as response:
            assert response.status == 200
            data = await response.json()
    assert data["path"] == "/hello?x=1"
    headers = data["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert len(headers["x-request-id"]) == 36
    assert headers["traceparent"].startswith("00-")
    assert "proxy-connection" not in headers


async def test_requests_client_reaches_app_through_http_proxy_env(
    upstream: ScriptedUpstream, sidecars: Sidecars, proxy_env: Callable[[Sidecar], None]
) -> None:
    sidecar = await sidecars("client", upstream.port)
    proxy_env(sidecar)

    def call() -> requests.Response:
        with requests.Session() as session:
            first = session.post(f"http://127.0.0.1:{upstream.port}/a", data=b"x" * 1000, timeout=5)
            assert first.status_code == 200
            return session.get(f"http://127.0.0.1:{upstream.port}/b", timeout=5)

    response = await asyncio.to_thread(call)
    assert response.status_code == 200
    assert response.json()["path"] == "/b"
    assert [(s.method, s.path, s.body_len) for s in upstream.seen] == [
        ("POST", "/a", 1000),
        ("GET", "/b", 0),
    ]
    assert sidecar.upstream.reused >= 1  # the second request reused the pooled connection


async def test_curl_reaches_app_through_http_proxy_env(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    """curl as it is, its proxy from the environment: only the lower-case http_proxy (curl
    ignores HTTP_PROXY, the httpoxy guard), so the compose file and the demo set both."""
    sidecar = await sidecars("client", upstream.port)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "http_proxy": url(_outbound(sidecar))}
    target = f"http://127.0.0.1:{upstream.port}/curl?x=1"
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-m", "10", "-H", "x-test: 1", target, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["path"] == "/curl?x=1"
    assert data["headers"]["traceparent"].startswith("00-")  # it went through the sidecar
    assert "proxy-connection" not in data["headers"]


async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    sidecar = await sidecars("client", upstream.port)
    host = f"127.0.0.1:{upstream.port}"
    pipeline = (
        b"".join(f"GET /{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for i in range(5))
        + f"POST /last HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc".encode()
    )
    reader, writer = await asyncio.open_connection(*_outbound(sidecar))
    try:
        writer.write(pipeline)
        paths = []
        for _ in range(6):
            status, headers, body = await asyncio.wait_for(read_response(reader), 5)
            assert status == 200
            assert headers.get("connection") != "close"
            paths.append(json.loads(body)["path"])
    finally:
        writer.close()
    assert paths == ["/0", "/1", "/2", "/3", "/4", "/last"]
    assert upstream.seen[-1].body_len == 3


async def test_chunked_and_sized_bodies_stream_both_ways(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    sidecar = await sidecars("client", upstream.port)
    proxy = url(_outbound(sidecar))

    async def chunks() -> object:
        for _ in range(40):
            yield b"y" * 50_000

    target = f"http://127.0.0.1:{upstream.port}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{target}/sink", data=chunks(), proxy=proxy) as response:
            assert (await response.json())["bytes"] == 2_000_000
        async with session.post(f"{target}/sink", data=b"z" * 300_000, proxy=proxy) as response:
            assert (await response.json())["bytes"] == 300_000
        async with session.get(f"{target}/stream?mb=3", proxy=proxy) as response:
            assert response.headers["Transfer-Encoding"] == "chunked"
            assert len(await response.read()) == 3 << 20
    assert upstream.seen[0].headers.get("transfer-encoding") == "chunked"
    assert upstream.seen[1].headers.get("content-length") == "300000"


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431,
         "headers_too_large"),
        (b"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"zz\r\nhi\r\n0\r\n\r\n", 400, "bad_request"),
        (b"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
         b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n", 400, "bad_request"),
        (b"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
         400, "bad_request"),
    ],
    ids=["bad-request-line", "oversize-headers", "bad-chunk-size", "cl-and-te", "two-lengths"],
)  # fmt: skip
async def test_malformed_requests_get_a_marked_4xx_and_never_reach_the_app(
    upstream: ScriptedUpstream, sidecars: Sidecars, raw: bytes, status: int, reason: str
) -> None:
    sidecar = await sidecars("client", upstream.port)
    data = raw.replace(b"{host}", f"127.0.0.1:{upstream.port}".encode())
    answer = await raw_exchange(_outbound(sidecar), data)
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith(f"HTTP/1.1 {status} ")
    assert f"x-meshlens-error: {reason}" in head
    assert "connection: close" in head
    assert answer.count(b"HTTP/1.1") == 1
    assert upstream.seen == []


async def test_websocket_upgrade_passes_through(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    sidecar = await sidecars("client", upstream.port)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"http://127.0.0.1:{upstream.port}/ws", proxy=url(_outbound(sidecar))
        ) as ws:
            await ws.send_str("hello")
            assert (await asyncio.wait_for(ws.receive_str(), 5)) == "echo:hello"
            await ws.send_bytes(b"\x00\x01" * 1000)
            assert (await asyncio.wait_for(ws.receive_bytes(), 5)) == b"\x00\x01" * 1000


async def test_client_and_server_sidecars_carry_a_request_to_the_app(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    server = await sidecars("reviews", upstream.port)
    assert server.addresses is not None
    inbound = server.addresses.inbound
    client = await sidecars(
        "web",
        upstream.port,
        config={"upstreams": {"reviews": {"endpoints": [f"{inbound[0]}:{inbound[1]}"]}}},
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url(_outbound(client)) + "/r/1", headers={"Host": "reviews"}
        ) as response:
            assert response.status == 200
            data = await response.json()
        async with session.head(url(_outbound(client)) + "/r/1", headers={"Host": "reviews"}) as r:
            assert r.status == 200
            assert int(r.headers["Content-Length"]) > 0
    assert data["path"] == "/r/1"
    assert data["headers"]["host"] == "reviews"
    # the client sidecar's attempt span id is the parent the server sidecar saw; the app gets
    # the server span's id, so the two sidecars' spans and the app's form one trace
    assert data["headers"]["traceparent"].startswith("00-")
    stats = client.stats_doc()
    assert stats["upstream_pool"]["connections_opened"] >= 1  # type: ignore[index]
    assert "reviews" in json.dumps(client.config_doc())


async def test_a_request_addressed_to_the_sidecar_itself_is_refused_not_looped(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    sidecar = await sidecars("client", upstream.port)
    host, port = _outbound(sidecar)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{host}:{port}/x") as response:
            assert response.status == 404
            assert response.headers["x-meshlens-error"] == "no_route"
    assert upstream.seen == []


async def test_other_names_of_the_sidecar_itself_end_the_loop_at_its_first_turn(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    # names the own-listener list does not hold: each went round ~64 times (until the
    # x-forwarded-for the hops appended passed the header limit: a 431 after 1-2.5 s), leaving
    # 128 sockets open per request
    sidecar = await sidecars("client", upstream.port)
    _, port = _outbound(sidecar)
    for host in (f"127.1:{port}", f"[::ffff:127.0.0.1]:{port}", f"2130706433:{port}"):
        raw = f"GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()

        answer = await raw_exchange(_outbound(sidecar), raw)

        assert answer.startswith(b"HTTP/1.1 404 "), (host, answer[:200])
        assert b"x-meshlens-error: no_route" in answer
        assert b"request loop" in answer
    assert sidecar.upstream.opened == 3  # one connection per request: no second turn
    assert upstream.seen == []
    listeners: Any = sidecar.stats_doc()["listeners"]
    assert listeners["outbound"]["refused"] == {"loop": 3}


async def test_upstream_reset_mid_body_aborts_that_response_and_the_sidecar_keeps_serving(
    upstream_factory: Callable[..., Awaitable[ScriptedUpstream]], sidecars: Sidecars
) -> None:
    upstream, other = await upstream_factory("app"), await upstream_factory("other")
    sidecar = await sidecars("client", upstream.port)
    target = f"http://127.0.0.1:{upstream.port}"
    proxy = url(_outbound(sidecar))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{target}/stream?mb=64", proxy=proxy) as response:
            assert response.status == 200
            await response.content.readexactly(1 << 16)
            await upstream.die()  # the app goes away while the body is still streaming
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        async with session.get(f"http://127.0.0.1:{other.port}/", proxy=proxy) as response:
            assert response.status == 200


async def test_idle_keep_alive_connections_are_closed_after_the_idle_timeout() -> None:
    async def handler(request: Request) -> Response:
        return Response(200, (), b"ok")

    server = HttpServer(ServerConfig(idle_timeout_s=0.2), lambda: handler)
    address = await server.start()
    try:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, _, body = await asyncio.wait_for(read_response(reader), 5)
        assert (status, body) == (200, b"ok")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
    finally:
        await server.close()


async def test_websocket_passes_through_a_client_and_server_sidecar_pair(
    upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    server = await sidecars("reviews", upstream.port)
    assert server.addresses is not None
    host, port = server.addresses.inbound
    client = await sidecars(
        "web", upstream.port, config={"upstreams": {"reviews": {"endpoints": [f"{host}:{port}"]}}}
    )
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            url(_outbound(client)) + "/ws", headers={"Host": "reviews"}
        ) as ws:
            for i in range(3):
                await ws.send_str(f"m{i}")
                assert (await asyncio.wait_for(ws.receive_str(), 5)) == f"echo:m{i}"
