"""HttpTransport (OTLP/HTTP over the sidecar's own pooled client) against real sockets."""

from __future__ import annotations

import asyncio
import gzip
import socket

import pytest

from sidecar.codec import HttpServer, ServerConfig
from sidecar.http import Request, Response, header_value
from sidecar.telemetry.transport import HttpTransport, TransportError

pytestmark = pytest.mark.timeout(30)


async def test_posts_gzip_protobuf_under_the_url_prefix_and_reuses_the_connection() -> None:
    """With compression="gzip" (`--otlp-compression gzip`)."""
    seen: list[Request] = []

    async def collector(request: Request) -> Response:
        seen.append(request)
        if len(seen) == 1:
            return Response(503, (("retry-after", "3"),), b"busy")
        return Response(200, (("content-type", "application/x-protobuf"),), b"\x0a\x02\x08\x05")

    server = HttpServer(ServerConfig(direction="inbound"), lambda: collector)
    host, port = await server.start("127.0.0.1", 0)
    transport = HttpTransport(f"http://{host}:{port}/otlp/", timeout_s=5.0, compression="gzip")
    try:
        busy = await transport.post("/v1/traces", b"spans" * 100)
        ok = await transport.post("/v1/metrics", b"metrics")
    finally:
        await transport.close()
        await server.close()
    assert (busy.status, busy.retry_after, busy.body) == (503, "3", b"busy")
    assert (ok.status, ok.retry_after, ok.body) == (200, None, b"\x0a\x02\x08\x05")
    first, second = seen
    assert first.method == "POST" and first.target == "/otlp/v1/traces"
    assert second.target == "/otlp/v1/metrics"
    assert first.authority == f"{host}:{port}"
    assert header_value(first.headers, "content-type") == "application/x-protobuf"
    assert header_value(first.headers, "content-encoding") == "gzip"
    assert isinstance(first.body, bytes) and gzip.decompress(first.body) == b"spans" * 100
    assert len(server.connections) == 1  # one keep-alive connection carried both


async def test_posts_uncompressed_protobuf_by_default() -> None:
    seen: list[Request] = []

    async def collector(request: Request) -> Response:
        seen.append(request)
        return Response(200, (("content-type", "application/x-protobuf"),), b"")

    server = HttpServer(ServerConfig(direction="inbound"), lambda: collector)
    host, port = await server.start("127.0.0.1", 0)
    transport = HttpTransport(f"http://{host}:{port}", timeout_s=5.0)
    try:
        ok = await transport.post("/v1/traces", b"spans" * 100)
    finally:
        await transport.close()
        await server.close()
    assert ok.status == 200
    (request,) = seen
    assert header_value(request.headers, "content-type") == "application/x-protobuf"
    assert header_value(request.headers, "content-encoding") is None
    assert request.body == b"spans" * 100


async def test_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        transport = HttpTransport(f"http://127.0.0.1:{port}", timeout_s=2.0)
        with pytest.raises(TransportError):
            await transport.post("/v1/traces", b"x")
        await transport.close()


async def test_a_silent_collector_times_out() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = HttpTransport(f"http://127.0.0.1:{port}", timeout_s=0.2)
    try:
        with pytest.raises(TransportError):
            await transport.post("/v1/traces", b"x")
    finally:
        await transport.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


def test_bad_urls_are_refused() -> None:
    for url in ("127.0.0.1:4318", "http://", "http://host:notaport"):
        with pytest.raises(ValueError):
            HttpTransport(url)
    for compression in ("deflate", "GZIP", ""):
        with pytest.raises(ValueError, match="compression must be none or gzip"):
            HttpTransport("http://127.0.0.1:4318", compression=compression)
