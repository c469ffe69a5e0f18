"""Semconv helpers: method normalisation, span names and status, header injection, addresses."""

from __future__ import annotations

from sidecar.telemetry.semconv import (
    client_status,
    inject,
    normalize_method,
    peer_from_spiffe,
    server_status,
    span_name,
    split_host_port,
)
from sidecar.telemetry.spans import STATUS_ERROR, STATUS_UNSET

TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = bytes.fromhex("00f067aa0ba902b7")


def test_unknown_methods_become_other_and_http_in_span_names() -> None:
    assert normalize_method("GET") == "GET" and normalize_method("BREW") == "_OTHER"
    assert span_name("_OTHER", "") == "HTTP"
    assert span_name("GET", "orders") == "GET orders" and span_name("GET", "") == "GET"


def test_status_rules_differ_for_client_and_server() -> None:
    assert client_status(404, "") == STATUS_ERROR and server_status(404, "") == STATUS_UNSET
    assert client_status(200, "") == STATUS_UNSET and server_status(503, "") == STATUS_ERROR
    assert server_status(429, "rate_limited") == STATUS_ERROR


def test_inject_replaces_trace_headers_and_keeps_the_rest_in_order() -> None:
    headers = (
        ("accept", "*/*"),
        ("traceparent", "00-old-old-01"),
        ("tracestate", "a=1"),
        ("x-b3-spanid", "b" * 16),
        ("cookie", "c=1"),
    )
    out = inject(headers, TRACE, SPAN, 1, "a=1")
    assert out[:2] == (("accept", "*/*"), ("cookie", "c=1"))
    assert ("traceparent", f"00-{TRACE.hex()}-{SPAN.hex()}-01") in out
    assert ("tracestate", "a=1") in out
    assert ("x-b3-spanid", SPAN.hex()) in out and ("x-b3-sampled", "1") in out
    assert [k for k, _ in out].count("traceparent") == 1


def test_inject_without_b3_input_writes_only_w3c() -> None:
    out = inject((("accept", "*/*"),), TRACE, SPAN, 0, "")
    assert [k for k, _ in out] == ["accept", "traceparent"]
    assert out[1][1].endswith("-00")


def test_inject_without_trace_headers_keeps_every_header_and_appends_ours() -> None:
    headers = (("host", "app"), ("accept", "*/*"), ("x-a", "1"))
    traceparent = ("traceparent", f"00-{TRACE.hex()}-{SPAN.hex()}-01")
    assert inject(headers, TRACE, SPAN, 1, "") == (*headers, traceparent)
    assert inject(headers, TRACE, SPAN, 1, "v=1") == (*headers, traceparent, ("tracestate", "v=1"))
    assert inject((), TRACE, SPAN, 1, "") == (traceparent,)


def test_split_host_port() -> None:
    assert split_host_port("10.0.0.1:8080") == ("10.0.0.1", 8080)
    assert split_host_port("orders") == ("orders", 0)
    assert split_host_port("[::1]:443") == ("::1", 443)
    assert split_host_port("fe80::1") == ("fe80::1", 0)
    assert split_host_port("orders:http") == ("orders", 0)


def test_peer_from_spiffe() -> None:
    assert peer_from_spiffe("spiffe://mesh.local/ns/shop/sa/frontend") == "frontend"
    assert peer_from_spiffe("spiffe://mesh.local/other") == ""
    assert peer_from_spiffe("frontend") == ""


def test_span_names_are_cached_per_route_and_method_and_bounded() -> None:
    from sidecar.telemetry import semconv

    first = span_name("GET", "orders")
    assert span_name("GET", "orders") is first  # built once
    assert span_name("_OTHER", "orders") == "HTTP orders"
    assert span_name("POST", "orders") == "POST orders"
    for n in range(3000):  # many routes: the cache is cleared, names stay right
        assert span_name("GET", f"r{n}") == f"GET r{n}"
    assert len(semconv._SPAN_NAMES) <= 1024
