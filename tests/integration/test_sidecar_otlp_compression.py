"""A real `meshlens sidecar` process exports its spans to the real collector (OTLP/HTTP receiver,
spool, batch processor, embedded ClickHouse store) uncompressed by default and gzip-compressed with
--otlp-compression gzip; a byte relay between them records what went over the wire."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from collector.pipeline import Pipeline, PipelineConfig
from collector.processors.batch import BatchConfig
from collector.receivers.otlp_http import OtlpHttpConfig
from collector.store import Store, open_store
from tests.integration.conftest import ScriptedUpstream, SidecarProcess, url, wait_for_rows

pytestmark = pytest.mark.timeout(60)


class Relay:
    """Forwards TCP connections to `target`, keeping a copy of every byte sent towards it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sent = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer, record=True)),
            asyncio.create_task(self._pipe(up_reader, writer, record=False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, record: bool
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if record:
                    self.sent += chunk
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, Store]]:
    store = open_store(f"chdb://{tmp_path / 'ch'}")
    await store.migrate()
    config = PipelineConfig(
        spool_dir=tmp_path / "spool",
        http=OtlpHttpConfig(port=0),
        grpc=None,
        batch=BatchConfig(max_age_s=0.05),
        fsync=False,
    )
    pipeline = Pipeline(config, store)
    await pipeline.start()
    try:
        yield pipeline, store
    finally:
        await pipeline.shutdown()
        await store.close()


@pytest.mark.parametrize(
    ("flags", "gzipped"), [([], False), (["--otlp-compression", "gzip"], True)]
)
async def test_spans_reach_the_collector_store_uncompressed_or_gzipped(
    flags: list[str],
    gzipped: bool,
    monkeypatch: pytest.MonkeyPatch,
    collector: tuple[Pipeline, Store],
    upstream: ScriptedUpstream,
    sidecar_process: Callable[..., Awaitable[SidecarProcess]],
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_COMPRESSION", raising=False)
    pipeline, store = collector
    receiver = pipeline.http
    assert receiver is not None
    host, _, port = receiver.address.rpartition(":")
    relay = Relay((host.removeprefix("http://"), int(port)))
    await relay.start()
    try:
        sidecar = await sidecar_process(
            "web",
            upstream.port,
            config={"upstreams": {"app": {"endpoints": [f"127.0.0.1:{upstream.port}"]}}},
            extra=["--collector", f"http://127.0.0.1:{relay.port}", *flags],
        )
        async with aiohttp.ClientSession() as session:
            for i in range(3):
                async with session.get(
                    f"{url(sidecar.outbound)}/item/{i}", headers={"Host": "app"}
                ) as response:
                    assert response.status == 200
        rows = await wait_for_rows(
            store,
            "SELECT SpanName, SpanKind FROM otel_traces WHERE ServiceName = 'web'"
            " AND SpanKind = 'Client' AND SpanName LIKE 'GET%'",
            3,
        )
        assert len(rows) >= 3
        sidecar.terminate()
        assert await sidecar.wait(10) == 0
    finally:
        await relay.close()
    sent = bytes(relay.sent)
    assert b"POST /v1/traces HTTP/1.1\r\n" in sent
    assert (b"content-encoding: gzip\r\n" in sent.lower()) is gzipped
    assert (b"\r\n\r\n\x1f\x8b" in sent) is gzipped  # a gzip member right after the head
