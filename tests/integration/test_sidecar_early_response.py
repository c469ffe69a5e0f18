"""An app that answers before it has read the request body (401 to an upload): the client,
still sending, must get that answer, and the connection must not wait for a reader that
left. Before, the abandoned body filled the sidecar's buffer, reading paused, and a client
that sends its whole body before reading (httpx, requests) waited until the idle timeout,
then saw the connection close instead of the 401."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from sidecar.app import Sidecar
from tests.integration.conftest import RawHttpApp

pytestmark = pytest.mark.timeout(60)

Sidecars = Callable[..., Awaitable[Sidecar]]


class EarlyApp(RawHttpApp):
    """Answers a POST with 401 as soon as its head is in, then reads its body (by length) as
    a server does; anything else 200."""

    async def answer(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not head.startswith(b"POST"):
            await super().answer(head, reader, writer)
            return
        writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnope")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)


@pytest.mark.parametrize("size", [1_000_000, 4_000_000], ids=["drained", "closed-lingering"])
async def test_an_early_answer_to_an_upload_reaches_a_client_still_sending(
    sidecars: Sidecars, size: int
) -> None:
    app = EarlyApp()
    await app.start()
    try:
        config = {"upstreams": {"app": {"endpoints": [f"127.0.0.1:{app.port}"]}}}
        sidecar = await sidecars("web", app.port, config=config)
        assert sidecar.addresses is not None
        host, port = sidecar.addresses.outbound
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:
            upload = await client.post(
                f"http://{host}:{port}/upload", headers={"host": "app"}, content=b"x" * size
            )
            assert (upload.status_code, upload.text) == (401, "nope")
            await asyncio.sleep(0.2)  # (a closing connection leaves the set)
            kept = set(sidecar.outbound.connections)
            after = await client.get(f"http://{host}:{port}/next", headers={"host": "app"})
            assert after.status_code == 200
            # under 1 MiB still due, the rest is drained and the connection kept; more, it
            # closes (once the client stopped sending) and the next request comes on a new one
            assert (set(sidecar.outbound.connections) == kept != set()) == (size < 1 << 20)
    finally:
        app.close()
