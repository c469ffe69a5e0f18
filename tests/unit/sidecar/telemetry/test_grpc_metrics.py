from __future__ import annotations

import pytest

from sidecar.http import AttrValue
from sidecar.telemetry.grpc_metrics import OTHER, UNKNOWN, GrpcMethodMetrics, grpc_method
from sidecar.telemetry.metrics import Registry
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
