"""The server backend at its HTTP edge: a silent server and an auth failure, on 127.0.0.1 port 0.

The ClickHouse server is scripted here (an external system); the store code under test is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from collector.store import StoreUnavailable, open_store

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    await asyncio.sleep(3600)  # never answers; cancelled when the server closes


async def _auth_failure(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    # Real servers can echo what they were sent; the store must scrub the password anyway.
    body = b"Code: 516. DB::Exception: ana: Authentication failed: password hunter2 is incorrect"
    writer.write(
        b"HTTP/1.1 500 Internal Server Error\r\nX-ClickHouse-Exception-Code: 516\r\n"
        b"Content-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()


@pytest.fixture
async def scripted_port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    handler: Handler = request.param
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for task in tasks:
            task.cancel()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("scripted_port", [_silent], indirect=True)
async def test_a_silent_server_is_unavailable_within_the_deadline(scripted_port: int) -> None:
    store = open_store(
        f"http://ana:hunter2@127.0.0.1:{scripted_port}/db", timeout_s=0.5, connect_timeout_s=0.5
    )
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.query("SELECT 1")
    finally:
        await store.close()

    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("scripted_port", [_auth_failure], indirect=True)
async def test_auth_failure_is_retryable_and_scrubbed(scripted_port: int) -> None:
    store = open_store(f"http://ana:hunter2@127.0.0.1:{scripted_port}/db", timeout_s=2)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.insert("otel_traces", {"TraceId": ["a"]})
    finally:
        await store.close()

    assert caught.value.code == 516
    assert "hunter2" not in str(caught.value)
    assert "Authentication failed" in str(caught.value)
