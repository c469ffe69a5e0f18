"""Store outages against the real embedded store: accepted spans are kept in the spool, retried,
and written exactly once; a full spool pushes back (503 + Retry-After, UNAVAILABLE + RetryInfo)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.exporters.clickhouse import ClickHouseExporterConfig
from collector.pipeline import Pipeline, PipelineConfig
from collector.processors.batch import BatchConfig
from collector.receivers.otlp_grpc import OtlpGrpcConfig
from collector.receivers.otlp_http import OtlpHttpConfig
from collector.store import Rows, Store, StoreUnavailable, open_store


class FlakyStore:
    """The real store, except that inserts fail while `down` is set, and `lose_replies` inserts
    succeed in the engine but report StoreUnavailable (an answer lost on the way back)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = False
        self.lose_replies = 0
        self.failures = 0

    @property
    def url(self) -> str:
        return self.inner.url

    async def migrate(self) -> int:
        return await self.inner.migrate()

    async def insert(
        self, table: str, columns: Mapping[str, Sequence[Any]], *, dedup_token: str | None = None
    ) -> int:
        if self.down:
            self.failures += 1
            raise StoreUnavailable("store down (test)")
        written = await self.inner.insert(table, columns, dedup_token=dedup_token)
        if self.lose_replies > 0:
            self.lose_replies -= 1
            self.failures += 1
            raise StoreUnavailable("reply lost (test)")
        return written

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Rows:
        return await self.inner.query(sql, params)

    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        await self.inner.command(sql, params)

    async def ping(self) -> bool:
        return not self.down and await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
async def flaky(tmp_path: Path) -> AsyncIterator[FlakyStore]:
    store = FlakyStore(open_store(f"chdb://{tmp_path / 'ch'}"))
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


async def _start(tmp_path: Path, store: FlakyStore, **spool: int) -> Pipeline:
    config = PipelineConfig(
        spool_dir=tmp_path / "spool",
        http=OtlpHttpConfig(port=0),
        grpc=OtlpGrpcConfig(port=0),
        batch=BatchConfig(max_age_s=0.05, max_rows=50),
        exporter=ClickHouseExporterConfig(retry_initial_s=0.02, retry_max_s=0.1),
        spool_segment_bytes=spool.get("segment_bytes", 1 << 20),
        spool_max_bytes=spool.get("max_bytes", 1 << 30),
    )
    pipeline = Pipeline(config, store)
    await pipeline.start()
    return pipeline


def _send_spans(endpoint: str, batches: int, per_batch: int) -> list[str]:
    """Export spans through the SDK's OTLP/HTTP exporter; returns the span ids it sent."""
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "orders"}))
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
    tracer = provider.get_tracer("outage")
    for batch in range(batches):
        for index in range(per_batch):
            with tracer.start_as_current_span(f"op-{batch}-{index}"):
                pass
    provider.shutdown()
    return [f"{span.context.span_id:016x}" for span in recorded.get_finished_spans()]


async def _span_counts(store: FlakyStore) -> tuple[int, int]:
    rows = await store.query("SELECT count() AS n, uniqExact(SpanId) AS u FROM otel_traces")
    return int(rows[0]["n"]), int(rows[0]["u"])


async def _wait_rows(store: FlakyStore, want: int) -> None:
    for _ in range(300):
        if (await _span_counts(store))[0] >= want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"store never reached {want} rows: {await _span_counts(store)}")


async def test_spans_accepted_during_an_outage_are_written_exactly_once_after_it(
    tmp_path: Path, flaky: FlakyStore
) -> None:
    pipeline = await _start(tmp_path, flaky)
    try:
        flaky.down = True
        endpoint = f"{pipeline.addresses()['otlp-http']}/v1/traces"
        sent = await asyncio.to_thread(_send_spans, endpoint, 3, 10)
        for _ in range(200):
            if flaky.failures >= 3:
                break
            await asyncio.sleep(0.02)
        assert flaky.failures >= 3
        assert await _span_counts(flaky) == (0, 0)
        assert pipeline.metrics.value("meshlens_collector_spool_pending_records") > 0

        flaky.down = False
        await _wait_rows(flaky, len(sent))
        await asyncio.sleep(0.3)  # any duplicate would have landed by now
        rows = await flaky.query("SELECT SpanId FROM otel_traces")
        assert sorted(r["SpanId"] for r in rows) == sorted(sent)
    finally:
        await pipeline.shutdown()


async def test_an_insert_whose_reply_is_lost_is_retried_without_duplicates(
    tmp_path: Path, flaky: FlakyStore
) -> None:
    flaky.lose_replies = 2
    pipeline = await _start(tmp_path, flaky)
    try:
        endpoint = f"{pipeline.addresses()['otlp-http']}/v1/traces"
        sent = await asyncio.to_thread(_send_spans, endpoint, 2, 20)
        await _wait_rows(flaky, len(sent))
        for _ in range(100):
            if (
                flaky.lose_replies == 0
                and pipeline.metrics.value("meshlens_collector_spool_pending_records") == 0
            ):
                break
            await asyncio.sleep(0.02)
        assert flaky.failures == 2
        assert await _span_counts(flaky) == (len(sent), len(sent))
    finally:
        await pipeline.shutdown()


def _request(spans: int) -> bytes:
    request = trace_service_pb2.ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for _ in range(spans):
        scope.spans.add(name="x" * 50, trace_id=os.urandom(16), span_id=os.urandom(8))
    return bytes(request.SerializeToString())


async def test_a_full_spool_answers_503_retry_after_and_recovers(
    tmp_path: Path, flaky: FlakyStore
) -> None:
    flaky.down = True
    pipeline = await _start(tmp_path, flaky, segment_bytes=16 * 1024, max_bytes=64 * 1024)
    url = f"{pipeline.addresses()['otlp-http']}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            statuses: list[int] = []
            for _ in range(40):
                async with http.post(url, data=_request(60), headers=headers) as response:
                    statuses.append(response.status)
                    if response.status == 503:
                        assert response.headers["Retry-After"].isdigit()
                        message = status_pb2.Status.FromString(await response.read()).message
                        assert "disk cap" in message
                        break
            assert statuses[0] == 200 and statuses[-1] == 503

            async with grpc.aio.insecure_channel(pipeline.addresses()["otlp-grpc"]) as channel:
                export = channel.unary_unary(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await export(_request(60), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            details = dict(caught.value.trailing_metadata() or ())["grpc-status-details-bin"]
            status = status_pb2.Status.FromString(details)
            retry = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(retry) and retry.retry_delay.seconds >= 1

            flaky.down = False
            accepted = statuses.count(200)
            await _wait_rows(flaky, accepted * 60)
            async with http.post(url, data=_request(60), headers=headers) as response:
                assert response.status == 200
        await _wait_rows(flaky, (accepted + 1) * 60)
        assert await _span_counts(flaky) == ((accepted + 1) * 60,) * 2
    finally:
        await pipeline.shutdown()
