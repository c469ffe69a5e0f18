"""The collector end to end on loopback: OpenTelemetry SDK exporters (HTTP protobuf, gRPC, metrics),
OTLP/JSON, bad input, self-metrics, all landing in the real embedded store."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import status_pb2
from grpc import Compression as GrpcCompression
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from collector.pipeline import Pipeline, PipelineConfig
from collector.processors.batch import BatchConfig
from collector.receivers.otlp_grpc import OtlpGrpcConfig
from collector.receivers.otlp_http import OtlpHttpConfig
from collector.store import Store, open_store
from tests.integration.conftest import wait_for_rows

PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, Store]]:
    store = open_store(f"chdb://{tmp_path / 'ch'}")
    await store.migrate()
    config = PipelineConfig(
        spool_dir=tmp_path / "spool",
        http=OtlpHttpConfig(port=0, max_body_bytes=64 * 1024),
        grpc=OtlpGrpcConfig(port=0, max_message_bytes=64 * 1024),
        batch=BatchConfig(max_age_s=0.05),
    )
    pipeline = Pipeline(config, store)
    await pipeline.start()
    try:
        yield pipeline, store
    finally:
        await pipeline.shutdown()
        await store.close()


def _traced(exporter: SpanExporter, run: Callable[[Any], None]) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        run(provider.get_tracer("integration", "1.2.3"))
    finally:
        provider.shutdown()


def _server_with_failing_client(tracer: Any) -> None:
    with tracer.start_as_current_span(
        "GET /orders", kind=SpanKind.SERVER, attributes={"http.response.status_code": 500}
    ):
        with tracer.start_as_current_span(
            "GET inventory", kind=SpanKind.CLIENT, attributes={"retry": True, "attempt": 2}
        ) as client:
            client.set_status(Status(StatusCode.ERROR, "upstream reset"))


_SPAN_SQL = (
    "SELECT TraceId, SpanId, ParentSpanId, ServiceName, SpanName, SpanKind, Duration, StatusCode,"
    " StatusMessage, SpanAttributes, ScopeName, ScopeVersion,"
    " toUnixTimestamp64Nano(Timestamp) AS ts FROM otel_traces ORDER BY SpanKind"
)


def _check_server_and_client(rows: list[dict[str, Any]]) -> None:
    client, server = rows
    assert (client["SpanKind"], server["SpanKind"]) == ("Client", "Server")
    assert client["TraceId"] == server["TraceId"] and len(server["TraceId"]) == 32
    assert client["ParentSpanId"] == server["SpanId"] and server["ParentSpanId"] == ""
    assert len(client["SpanId"]) == 16 and client["SpanId"] == client["SpanId"].lower()
    assert {r["ServiceName"] for r in rows} == {"checkout"}
    assert (server["SpanName"], client["SpanName"]) == ("GET /orders", "GET inventory")
    assert (client["StatusCode"], client["StatusMessage"]) == ("Error", "upstream reset")
    assert server["StatusCode"] == "Unset"
    assert client["SpanAttributes"] == {"attempt": "2", "retry": "true"}
    assert server["SpanAttributes"] == {"http.response.status_code": "500"}
    assert (client["ScopeName"], client["ScopeVersion"]) == ("integration", "1.2.3")
    assert 0 < client["Duration"] <= server["Duration"] < 10**10
    assert server["ts"] <= client["ts"]


@pytest.mark.parametrize(
    "compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate]
)
async def test_sdk_http_protobuf_spans_land_with_exporter_columns(
    collector: tuple[Pipeline, Store], compression: Compression
) -> None:
    pipeline, store = collector
    exporter = HttpSpans(
        endpoint=f"{pipeline.addresses()['otlp-http']}/v1/traces",
        timeout=5,
        compression=compression,
    )
    await asyncio.to_thread(_traced, exporter, _server_with_failing_client)
    _check_server_and_client(await wait_for_rows(store, _SPAN_SQL, 2))


async def test_sdk_grpc_spans_land_with_exporter_columns(
    collector: tuple[Pipeline, Store],
) -> None:
    pipeline, store = collector
    exporter = GrpcSpans(
        endpoint=f"http://{pipeline.addresses()['otlp-grpc']}",
        insecure=True,
        timeout=5,
        compression=GrpcCompression.Gzip,
    )
    await asyncio.to_thread(_traced, exporter, _server_with_failing_client)
    _check_server_and_client(await wait_for_rows(store, _SPAN_SQL, 2))


def _record_metrics(endpoint: str) -> None:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, timeout=5), export_interval_millis=3_600_000
    )
    provider = MeterProvider(
        resource=Resource.create({"service.name": "checkout"}), metric_readers=[reader]
    )
    meter = provider.get_meter("integration")
    meter.create_counter("orders", unit="1").add(3, {"route": "/orders"})
    histogram = meter.create_histogram("http.server.request.duration", unit="s")
    for value in (0.01, 0.2, 0.3):
        histogram.record(value, {"route": "/orders"})
    meter.create_gauge("queue.depth").set(7)
    provider.shutdown()


async def test_sdk_metrics_land_in_their_tables(collector: tuple[Pipeline, Store]) -> None:
    pipeline, store = collector
    await asyncio.to_thread(_record_metrics, f"{pipeline.addresses()['otlp-http']}/v1/metrics")
    sums = await wait_for_rows(
        store,
        "SELECT MetricName, Value, IsMonotonic, Attributes, ServiceName FROM otel_metrics_sum",
        1,
    )
    assert sums == [
        {
            "MetricName": "orders",
            "Value": 3.0,
            "IsMonotonic": True,
            "Attributes": {"route": "/orders"},
            "ServiceName": "checkout",
        }
    ]
    hist = await wait_for_rows(
        store,
        "SELECT MetricUnit, Count, Sum, BucketCounts, Min, Max FROM otel_metrics_histogram",
        1,
    )
    assert hist[0]["MetricUnit"] == "s" and hist[0]["Count"] == 3
    assert hist[0]["Sum"] == pytest.approx(0.51) and sum(hist[0]["BucketCounts"]) == 3
    assert (hist[0]["Min"], hist[0]["Max"]) == (0.01, 0.3)
    gauge = await wait_for_rows(store, "SELECT MetricName, Value FROM otel_metrics_gauge", 1)
    assert gauge == [{"MetricName": "queue.depth", "Value": 7.0}]


def _json_span(trace_id: str, span_id: str) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "json-span",
        "kind": 3,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": 1700000000250000000,
        "attributes": [{"key": "n", "value": {"intValue": "5"}}],
    }


async def test_gzipped_json_lands_and_the_answer_is_json(collector: tuple[Pipeline, Store]) -> None:
    pipeline, store = collector
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]
                },
                "scopeSpans": [{"spans": [_json_span("AB" * 16, "cd" * 8)]}],
            }
        ]
    }
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{pipeline.addresses()['otlp-http']}/v1/traces",
            data=gzip.compress(json.dumps(body).encode()),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            timeout=aiohttp.ClientTimeout(total=10),
        )
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {}
    rows = await wait_for_rows(
        store, "SELECT TraceId, SpanId, SpanKind, Duration, SpanAttributes FROM otel_traces", 1
    )
    assert rows == [
        {
            "TraceId": "ab" * 16,
            "SpanId": "cd" * 8,
            "SpanKind": "Client",
            "Duration": 250_000_000,
            "SpanAttributes": {"n": "5"},
        }
    ]


def _proto_request(span_ids: list[bytes], trace_id: bytes | None = None) -> bytes:
    request = trace_service_pb2.ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(
        common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="raw"))
    )
    scope = resource.scope_spans.add()
    for span_id in span_ids:
        span = scope.spans.add(name="raw", span_id=span_id, trace_id=trace_id or os.urandom(16))
        span.start_time_unix_nano = 1_700_000_000_000_000_000
        span.end_time_unix_nano = 1_700_000_000_000_001_000
    return bytes(request.SerializeToString())


async def test_bad_input_gets_clear_4xx_and_the_collector_keeps_serving(
    collector: tuple[Pipeline, Store],
) -> None:
    pipeline, store = collector
    url = f"{pipeline.addresses()['otlp-http']}/v1/traces"
    good = _proto_request([os.urandom(8)])
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def post(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
            async with http.post(url, data=body, headers=headers) as response:
                return response.status, response.content_type, await response.read()

        status, kind, raw = await post(good[:-7], PROTOBUF)
        assert (status, kind) == (400, "application/x-protobuf")
        assert "malformed protobuf" in status_pb2.Status.FromString(raw).message

        status, _, raw = await post(good, {"Content-Type": "text/plain"})
        assert status == 415 and "unsupported Content-Type 'text/plain'" in raw.decode()

        status, kind, raw = await post(b'{"resourceSpans": [', {"Content-Type": "application/json"})
        assert (status, kind) == (400, "application/json")
        assert json.loads(raw)["message"].startswith("malformed JSON")

        status, _, raw = await post(b"\0" * (65 * 1024), PROTOBUF)
        assert status == 413

        bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))
        status, _, raw = await post(bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert status == 413
        assert "decompressed body exceeds" in status_pb2.Status.FromString(raw).message

        kept = os.urandom(8)
        status, _, raw = await post(_proto_request([kept, b"\1\2\3"]), PROTOBUF)
        assert status == 200
        partial = trace_service_pb2.ExportTraceServiceResponse.FromString(raw).partial_success
        assert partial.rejected_spans == 1
        assert "span_id must be 8 bytes, got 3" in partial.error_message

        status, _, _ = await post(good, PROTOBUF)
        assert status == 200

        async with http.get(pipeline.addresses()["otlp-http"] + "/healthz") as response:
            assert response.status == 200
        async with http.get(pipeline.addresses()["otlp-http"] + "/metrics") as response:
            text = await response.text()
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")

    rows = await wait_for_rows(store, "SELECT SpanId FROM otel_traces ORDER BY SpanId", 2)
    assert sorted(r["SpanId"] for r in rows) == sorted([kept.hex(), good_span_id(good)])
    assert 'meshlens_collector_requests_total{outcome="invalid",transport="http"} 2' in text
    assert 'meshlens_collector_requests_total{outcome="too_large",transport="http"} 2' in text
    assert 'meshlens_collector_rejected_items_total{signal="traces"} 1' in text


def good_span_id(body: bytes) -> str:
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    return str(request.resource_spans[0].scope_spans[0].spans[0].span_id.hex())


async def test_grpc_bad_data_is_invalid_argument(collector: tuple[Pipeline, Store]) -> None:
    pipeline, _ = collector
    async with grpc.aio.insecure_channel(pipeline.addresses()["otlp-grpc"]) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await export(b"\x0a\xff\xff", timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed protobuf" in (caught.value.details() or "")
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(
            _proto_request([os.urandom(8), b"\1"])
        )
        response = await stub.Export(request, timeout=5)
        assert response.partial_success.rejected_spans == 1


async def test_a_span_out_of_the_stores_time_range_costs_only_itself(
    collector: tuple[Pipeline, Store],
) -> None:
    # One span timed in 2300 (past DateTime64(9)'s 2262) used to make the store refuse the
    # insert batch it landed in: every other request's spans in that batch were lost.
    pipeline, store = collector
    url = f"{pipeline.addresses()['otlp-http']}/v1/traces"
    neighbour, kept, late = os.urandom(8), os.urandom(8), os.urandom(8)
    wild = trace_service_pb2.ExportTraceServiceRequest.FromString(_proto_request([kept, late]))
    span = wild.resource_spans[0].scope_spans[0].spans[1]
    span.start_time_unix_nano = span.end_time_unix_nano = 10**19
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def post(body: bytes) -> tuple[int, bytes]:
            async with http.post(url, data=body, headers=PROTOBUF) as response:
                return response.status, await response.read()

        # together, so both land in one insert batch (the batcher waits 50 ms)
        (status_a, _), (status_b, raw) = await asyncio.gather(
            post(_proto_request([neighbour])), post(wild.SerializeToString())
        )
    assert (status_a, status_b) == (200, 200)
    partial = trace_service_pb2.ExportTraceServiceResponse.FromString(raw).partial_success
    assert partial.rejected_spans == 1
    assert "a time at or after 2262-04-11" in partial.error_message
    rows = await wait_for_rows(store, "SELECT SpanId FROM otel_traces", 2)
    assert sorted(r["SpanId"] for r in rows) == sorted([neighbour.hex(), kept.hex()])
