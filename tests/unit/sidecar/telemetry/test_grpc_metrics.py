from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from sidecar.http import AttrValue, Request, Response
from sidecar.layers.grpc import grpc_layer
from sidecar.stack import compose
from sidecar.telemetry import Telemetry, TelemetryConfig
from sidecar.telemetry.grpc_metrics import OTHER, UNKNOWN, GrpcMethodMetrics, grpc_method
from sidecar.telemetry.metrics import Registry
from sidecar.telemetry.otel_metrics import HttpDurations
from tests.unit.sidecar.telemetry.promtext import parse_prometheus


def test_method_label_is_the_format_checked_path() -> None:
    attrs: dict[str, AttrValue] = {"rpc.service": "shop.Cart", "rpc.method": "Add"}
    assert grpc_method(attrs) == "/shop.Cart/Add"
    assert grpc_method({}) == UNKNOWN
    assert grpc_method({"rpc.service": "shop.Cart", "rpc.method": "Add/../x"}) == UNKNOWN
    assert grpc_method({"rpc.service": "9bad", "rpc.method": "Add"}) == UNKNOWN
    assert grpc_method({"rpc.service": "shop.Cart", "rpc.method": 3}) == UNKNOWN


def test_counts_and_durations_per_reporter_service_method_and_status() -> None:
    registry = Registry()
    metrics = GrpcMethodMetrics(registry)
    metrics.record(
        outbound=True, service="cart", method="/shop.Cart/Add", status="0", duration_ms=3
    )
    metrics.record(
        outbound=True, service="cart", method="/shop.Cart/Add", status="0", duration_ms=7
    )
    metrics.record(
        outbound=False, service="cart", method="/shop.Cart/Add", status="14", duration_ms=1
    )
    assert metrics.value(outbound=True, service="cart", method="/shop.Cart/Add", status="0") == 2
    types, samples = parse_prometheus(registry.render())
    assert types["meshlens_sidecar_grpc_requests_total"] == "counter"
    assert types["meshlens_sidecar_grpc_request_duration_milliseconds"] == "histogram"
    counts = {
        (s[1]["reporter"], s[1]["grpc_response_status"]): s[2]
        for s in samples
        if s[0] == "meshlens_sidecar_grpc_requests_total"
    }
    assert counts == {("source", "0"): 2, ("destination", "14"): 1}
    sums = [
        s
        for s in samples
        if s[0] == "meshlens_sidecar_grpc_request_duration_milliseconds_sum"
        and s[1]["reporter"] == "source"
    ]
    assert sums[0][1]["grpc_method"] == "/shop.Cart/Add"
    assert sums[0][1]["destination_service_name"] == "cart"
    assert sums[0][2] == 10


def test_distinct_methods_are_capped_into_other_and_counted() -> None:
    registry = Registry()
    metrics = GrpcMethodMetrics(registry, max_methods=2)
    for name in ("A", "B", "C", "D", "A"):
        metrics.record(
            outbound=True, service="svc", method=f"/p.S/{name}", status="0", duration_ms=1
        )
    assert metrics.value(outbound=True, service="svc", method="/p.S/A", status="0") == 2
    assert metrics.value(outbound=True, service="svc", method="/p.S/C", status="0") == 0
    assert metrics.value(outbound=True, service="svc", method=OTHER, status="0") == 2
    assert metrics.overflow.value(("source",)) == 2


def test_missing_service_and_bad_cap() -> None:
    metrics = GrpcMethodMetrics(Registry())
    metrics.record(outbound=False, service="", method=UNKNOWN, status="", duration_ms=1)
    assert metrics.value(outbound=False, service=UNKNOWN, method=UNKNOWN, status="") == 1
    with pytest.raises(ValueError, match="max_methods"):
        GrpcMethodMetrics(Registry(), max_methods=0)


async def _grpc_answer(request: Request) -> Response:
    code = "5" if request.path.endswith("/Get") else "0"
    return Response(200, (("content-type", "application/grpc"), ("grpc-status", code)), b"")


async def test_sidecar_records_grpc_calls_per_method_on_metrics_and_otlp() -> None:
    telemetry = Telemetry(TelemetryConfig(service="web"))
    handler = compose([telemetry.outbound_layer(), grpc_layer()], _grpc_answer)
    grpc_headers = (("content-type", "application/grpc"),)
    for path in ("/shop.Cart/Add", "/shop.Cart/Add", "/shop.Cart/Get", "/not-grpc-path"):
        await handler(Request("POST", path, grpc_headers, authority="cart"))
    await handler(Request("GET", "/", authority="cart"))  # plain HTTP: not a gRPC series
    _, samples = parse_prometheus(telemetry.prometheus_text())
    counts = {
        (s[1]["grpc_method"], s[1]["grpc_response_status"]): s[2]
        for s in samples
        if s[0] == "meshlens_sidecar_grpc_requests_total"
    }
    assert counts == {("/shop.Cart/Add", "0"): 2, ("/shop.Cart/Get", "5"): 1, (UNKNOWN, "0"): 1}
    assert {
        s[1]["reporter"] for s in samples if s[0] == "meshlens_sidecar_grpc_requests_total"
    } == {"source"}

    encoded = telemetry.recorder.durations.encode((("service.name", "web"),), now_ns=1)
    request = ExportMetricsServiceRequest.FromString(encoded)
    (rpc,) = [
        m for m in request.resource_metrics[0].scope_metrics[0].metrics if m.name.startswith("rpc.")
    ]
    assert rpc.name == "rpc.client.call.duration" and rpc.unit == "s"
    points = {
        tuple((a.key, a.value.string_value) for a in p.attributes): p.count
        for p in rpc.histogram.data_points
    }
    add = (
        ("rpc.system", "grpc"),
        ("rpc.service", "shop.Cart"),
        ("rpc.method", "Add"),
        ("rpc.grpc.status_code", "0"),
        ("server.address", "cart"),
    )
    assert points[add] == 2
    assert len(points) == 3


def test_otlp_rpc_series_are_capped_like_the_others() -> None:
    overflow: list[str] = []
    durations = HttpDurations(start_ns=0, max_series=1, on_overflow=overflow.append)
    durations.record_rpc(("grpc", "p.S", "A", "0", ""), 0.1, client=False)
    durations.record_rpc(("grpc", "p.S", "B", "0", ""), 0.1, client=False)
    assert len(durations) == 1 and overflow == ["rpc.server.call.duration"]
