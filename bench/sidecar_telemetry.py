"""CPU per request of the sidecar's telemetry vs the OpenTelemetry SDK, side by side in one run.

    .venv/bin/python bench/sidecar_telemetry.py [--requests 20000]

Rows (process CPU time, so the SDK's BatchSpanProcessor thread is included):
  meshlens layers        outbound + attempt layers: ids, traceparent injection, span tuple,
                         Istio metrics, OTel client histogram (no encoding)
  meshlens encode        hand-written OTLP protobuf encoding of those spans (+ gzip as exported)
  meshlens total         the two above per request: what a request costs end to end
  meshlens inbound       inbound layer: server span + metrics + encode
  otlp pb2 encode        the same spans through the generated opentelemetry-proto classes
  otel sdk span          TracerProvider + BatchSpanProcessor (no-op exporter), one span with
                         the same attributes per request
  otel sdk span+hist     the same plus one histogram record (what semconv metrics would add)
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from sidecar.http import Endpoint, Request, RequestContext, Response
from sidecar.stack import Handler, compose
from sidecar.telemetry import Telemetry, TelemetryConfig
from sidecar.telemetry.otlp import TraceEncoder
from sidecar.telemetry.spans import SpanRecord

ENDPOINT = Endpoint("10.0.0.7", 8080, service="orders")
HEADERS = (
    ("host", "orders"),
    ("user-agent", "wrk"),
    ("accept", "*/*"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
)


class _NoopExporter(SpanExporter):
    def export(self, spans: Sequence[object]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _cpu_us(fn: Callable[[], None], n: int) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) / n * 1e6


def _meshlens_stack(telemetry: Telemetry) -> Handler:
    async def upstream(request: Request) -> Response:
        return Response(200, body=b"hello world!")

    def route(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            ctx = request.context
            ctx.upstream, ctx.route, ctx.endpoint = "orders", "orders-default", ENDPOINT
            ctx.attributes["meshlens.route"] = "orders-default"
            ctx.attributes["meshlens.upstream"] = "orders"
            return await inner(request)

        return handle

    return compose([telemetry.outbound_layer(), route, telemetry.attempt_layer()], upstream)


def _requests(n: int) -> list[Request]:
    return [
        Request("GET", f"/orders/{i}", HEADERS, authority="orders", context=RequestContext())
        for i in range(n)
    ]


def bench_meshlens(n: int) -> dict[str, float]:
    telemetry = Telemetry(TelemetryConfig(service="checkout", max_queue_spans=n + 1))
    handler = _meshlens_stack(telemetry)
    inbound = compose([telemetry.inbound_layer()], handler)
    loop = asyncio.new_event_loop()
    requests = _requests(n)

    async def drive(h: Handler, reqs: list[Request]) -> None:
        for request in reqs:
            await h(request)

    loop.run_until_complete(drive(handler, requests[:1000]))  # warm caches
    telemetry.recorder.spans.take(n)
    layers = _cpu_us(lambda: loop.run_until_complete(drive(handler, requests)), n)
    spans = telemetry.recorder.spans.take(n)
    encoder = TraceEncoder(telemetry.resource)

    def encode() -> None:
        for i in range(0, len(spans), 512):
            gzip.compress(encoder.encode(spans[i : i + 512]), compresslevel=1)

    encode_us = _cpu_us(encode, n)
    pb2_us = _cpu_us(lambda: _encode_pb2(spans, telemetry.resource), n)
    inbound_requests = _requests(n)

    def run_inbound() -> None:
        loop.run_until_complete(drive(inbound, inbound_requests))
        taken = telemetry.recorder.spans.take(2 * n)
        for i in range(0, len(taken), 512):
            gzip.compress(encoder.encode(taken[i : i + 512]), compresslevel=1)

    inbound_us = _cpu_us(run_inbound, n)
    loop.close()
    return {
        "meshlens layers": layers,
        "meshlens encode": encode_us,
        "meshlens total": layers + encode_us,
        "meshlens inbound (+out)": inbound_us,
        "otlp pb2 encode": pb2_us,
    }


def _encode_pb2(spans: list[SpanRecord], resource: Sequence[tuple[str, object]]) -> None:
    for i in range(0, len(spans), 512):
        request = trace_service_pb2.ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        for key, value in resource:
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = key, str(value)
        ss = rs.scope_spans.add()
        ss.scope.name = "meshlens.sidecar"
        for span in spans[i : i + 512]:
            out = ss.spans.add()
            out.trace_id, out.span_id, out.parent_span_id = (
                span.trace_id,
                span.span_id,
                span.parent_span_id,
            )
            out.name, out.kind = span.name, span.kind
            out.start_time_unix_nano, out.end_time_unix_nano = span.start_ns, span.end_ns
            out.flags = span.flags
            for key, value in span.attributes.items():
                kv = out.attributes.add()
                kv.key = key
                if isinstance(value, bool):
                    kv.value.bool_value = value
                elif isinstance(value, int):
                    kv.value.int_value = value
                else:
                    kv.value.string_value = str(value)
            if span.status:
                out.status.code = span.status
        gzip.compress(request.SerializeToString(), compresslevel=1)


def bench_otel_sdk(n: int, with_histogram: bool) -> float:
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    processor = BatchSpanProcessor(_NoopExporter(), max_queue_size=n + 1)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    histogram = MeterProvider().get_meter("bench").create_histogram("http.client.request.duration")

    def run() -> None:
        for i in range(n):
            kind = trace.SpanKind.CLIENT
            with tracer.start_as_current_span("GET orders-default", kind=kind) as s:
                s.set_attributes(
                    {
                        "http.request.method": "GET",
                        "server.address": "10.0.0.7",
                        "server.port": 8080,
                        "url.full": f"http://orders/orders/{i}",
                        "network.protocol.version": "1.1",
                        "meshlens.upstream": "orders",
                        "meshlens.route": "orders-default",
                        "meshlens.attempt": 1,
                        "http.response.status_code": 200,
                    }
                )
            if with_histogram:
                histogram.record(0.001, {"http.request.method": "GET", "server.address": "orders"})
        processor.force_flush()

    result = _cpu_us(run, n)
    provider.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--requests", type=int, default=20000)
    n = parser.parse_args().requests
    rows = bench_meshlens(n)
    rows["otel sdk span"] = bench_otel_sdk(n, with_histogram=False)
    rows["otel sdk span+hist"] = bench_otel_sdk(n, with_histogram=True)
    baseline = rows["otel sdk span"]
    print(f"{'CPU per request':<26}{'us':>9}{'x sdk span':>12}   ({n} requests)")
    for name, value in rows.items():
        print(f"{name:<26}{value:>9.1f}{value / baseline:>12.2f}")


if __name__ == "__main__":
    main()
