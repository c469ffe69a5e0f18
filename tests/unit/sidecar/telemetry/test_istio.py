"""Istio standard metrics: labels per reporter, Envoy response flags, buckets, series cap."""

from __future__ import annotations

from sidecar.telemetry.istio import IstioMetrics, IstioPair, IstioWorkload, response_flags
from tests.unit.sidecar.telemetry.promtext import parse_prometheus

WORKLOAD = IstioWorkload(
    "checkout", namespace="shop", principal="spiffe://mesh/ns/shop/sa/checkout"
)
ISTIO_LABELS = {
    "reporter", "source_workload", "source_workload_namespace", "source_canonical_service",
    "source_principal", "destination_service", "destination_service_name",
    "destination_service_namespace", "destination_workload", "destination_workload_namespace",
    "destination_canonical_service", "destination_principal", "request_protocol", "response_code",
    "response_flags", "connection_security_policy", "grpc_response_status",
}  # fmt: skip


def test_response_flags_from_error_reasons() -> None:
    assert response_flags("", False) == "-"
    assert response_flags("connect_failure", False) == "UF"
    assert response_flags("overflow", False) == "UO"
    assert response_flags("retry_budget_exhausted", False) == "URX"
    assert response_flags("per_try_timeout", False) == "UT"
    assert response_flags("no_route", False) == "NR"
    assert response_flags("rate_limited", False) == "RL"
    assert response_flags("fault_abort", False) == "FI"
    assert response_flags("upstream_reset", False) == "UC"
    assert response_flags("no_healthy_upstream", False) == "UH"
    assert response_flags("", True) == "DI"
    assert response_flags("upstream_timeout", True) == "DI,UT"
    assert response_flags("something_new", False) == "-"


def _pair(max_series: int = 100) -> tuple[IstioPair, list[str]]:
    overflow: list[str] = []
    out = IstioMetrics(WORKLOAD, outbound=True, max_series=max_series, on_overflow=overflow.append)
    inb = IstioMetrics(WORKLOAD, outbound=False, max_series=max_series, on_overflow=overflow.append)
    return IstioPair(out, inb), overflow


def test_both_reporters_render_under_one_header_with_all_labels() -> None:
    pair, _ = _pair()
    pair.outbound.record(("orders", "", 200, "-", "unknown", "http", ""), 12.0, 10, 2000)
    pair.outbound.record(("orders", "", 200, "-", "unknown", "http", ""), 700.0, 10, 2000)
    pair.inbound.record(("frontend", "spiffe://x", 503, "UF", "mutual_tls", "http", ""), 0.2, 0, 5)
    lines: list[str] = []
    pair.render_into(lines)
    types, samples = parse_prometheus("\n".join(lines) + "\n")
    assert types == {
        "istio_requests_total": "counter",
        "istio_request_duration_milliseconds": "histogram",
        "istio_request_bytes": "histogram",
        "istio_response_bytes": "histogram",
    }
    totals = {lb["reporter"]: (lb, v) for n, lb, v in samples if n == "istio_requests_total"}
    source, count = totals["source"]
    assert count == 2 and set(source) == ISTIO_LABELS
    assert source["source_workload"] == "checkout" and source["source_workload_namespace"] == "shop"
    assert source["source_principal"] == WORKLOAD.principal
    assert source["destination_service_name"] == "orders"
    assert source["destination_principal"] == "unknown"
    assert source["connection_security_policy"] == "unknown"
    dest, _ = totals["destination"]
    assert dest["source_canonical_service"] == "frontend"
    assert dest["destination_workload"] == "checkout" and dest["response_flags"] == "UF"
    buckets = {
        lb["le"]: v
        for n, lb, v in samples
        if n == "istio_request_duration_milliseconds_bucket" and lb["reporter"] == "source"
    }
    assert buckets["10"] == 0 and buckets["25"] == 1 and buckets["500"] == 1
    assert buckets["1000"] == 2 and buckets["+Inf"] == 2
    assert list(buckets) == [
        "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
        "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
    ]  # fmt: skip


def test_series_cap_stops_new_label_sets() -> None:
    pair, overflow = _pair(max_series=2)
    for code in (200, 201, 202, 203):
        pair.outbound.record(("orders", "", code, "-", "unknown", "http", ""), 1.0, 0, 0)
    lines: list[str] = []
    pair.render_into(lines)
    _, samples = parse_prometheus("\n".join(lines) + "\n")
    assert len([1 for n, _, _ in samples if n == "istio_requests_total"]) == 2
    assert overflow == ["istio_requests_total", "istio_requests_total"]


def _render(pair: IstioPair) -> list[str]:
    lines: list[str] = []
    pair.render_into(lines)
    return lines


def test_record_plain_is_record_with_no_flags_over_http() -> None:
    general, _ = _pair()
    plain, _ = _pair()
    calls = [
        ("orders", "spiffe://a", 200, 1.0, 10, 20),
        ("orders", "spiffe://a", 200, 7.0, 0, 2000),
        ("orders", "spiffe://a", 503, 3.0, 5, 0),
        ("orders", "spiffe://b", 200, 1.0, 0, 0),  # another principal: rebinds the peer
        ("orders", "spiffe://a", 200, 2.0, 1, 1),  # and back
        ("users", "", 404, 0.2, 0, 0),
    ]
    for peer, principal, code, ms, req, resp in calls:
        general.outbound.record((peer, principal, code, "-", "unknown", "http", ""), ms, req, resp)
        plain.outbound.record_plain(peer, principal, code, "unknown", ms, req, resp)
        general.inbound.record(
            (peer, principal, code, "-", "mutual_tls", "http", ""), ms, req, resp
        )
        plain.inbound.record_plain(peer, principal, code, "mutual_tls", ms, req, resp)
    # a flagged request in between lands in its own series on both
    general.outbound.record(("orders", "spiffe://a", 200, "UT", "unknown", "http", ""), 1, 0, 0)
    plain.outbound.record(("orders", "spiffe://a", 200, "UT", "unknown", "http", ""), 1, 0, 0)
    plain.outbound.record_plain("orders", "spiffe://a", 200, "unknown", 4.0, 0, 0)
    general.outbound.record(("orders", "spiffe://a", 200, "-", "unknown", "http", ""), 4.0, 0, 0)
    assert _render(plain) == _render(general)
    _, samples = parse_prometheus("\n".join(_render(plain)) + "\n")
    totals = [v for n, _, v in samples if n == "istio_requests_total"]
    assert sorted(totals) == [1, 1, 1, 1, 1, 1, 1, 3, 4]


def test_record_plain_respects_the_series_cap() -> None:
    pair, overflow = _pair(max_series=2)
    for code in (200, 201, 202, 200, 202):
        pair.outbound.record_plain("orders", "", code, "unknown", 1.0, 0, 0)
    _, samples = parse_prometheus("\n".join(_render(pair)) + "\n")
    assert sorted(v for n, _, v in samples if n == "istio_requests_total") == [1, 2]
    assert overflow == ["istio_requests_total", "istio_requests_total"]
