"""OTel HTTP duration histograms encode to an ExportMetricsServiceRequest with semconv buckets."""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from sidecar.telemetry.otel_metrics import HTTP_DURATION_BUCKETS_S, HttpDurations


def test_histograms_encode_cumulatively_with_attributes() -> None:
    overflow: list[str] = []
    durations = HttpDurations(start_ns=1_000, max_series=10, on_overflow=overflow.append)
    durations.record_client(("GET", "orders", 8080, 200, "", "1.1"), 0.004)
    durations.record_client(("GET", "orders", 8080, 200, "", "1.1"), 0.3)
    durations.record_server(("POST", "http", 503, "pay", "503", "1.1"), 12.0)

    request = ExportMetricsServiceRequest()
    request.ParseFromString(durations.encode((("service.name", "checkout"),), now_ns=5_000))
    (rm,) = request.resource_metrics
    assert rm.resource.attributes[0].value.string_value == "checkout"
    metrics = {m.name: m for m in rm.scope_metrics[0].metrics}
    client = metrics["http.client.request.duration"]
    assert client.unit == "s" and client.histogram.aggregation_temporality == 2
    (point,) = client.histogram.data_points
    attrs = {kv.key: kv.value for kv in point.attributes}
    assert attrs["server.address"].string_value == "orders"
    assert attrs["server.port"].int_value == 8080
    assert attrs["http.response.status_code"].int_value == 200
    assert "error.type" not in attrs  # empty values are left out
    assert point.count == 2 and abs(point.sum - 0.304) < 1e-9
    assert list(point.explicit_bounds) == list(HTTP_DURATION_BUCKETS_S)
    assert point.bucket_counts[0] == 1 and point.bucket_counts[7] == 1  # 0.004 and (0.25, 0.5]
    assert point.start_time_unix_nano == 1_000 and point.time_unix_nano == 5_000
    (server_point,) = metrics["http.server.request.duration"].histogram.data_points
    assert server_point.bucket_counts[-1] == 1  # 12 s is past the last bound
    assert {kv.key: kv.value.string_value for kv in server_point.attributes}["http.route"] == "pay"
    assert overflow == []


def test_series_cap() -> None:
    overflow: list[str] = []
    durations = HttpDurations(start_ns=0, max_series=1, on_overflow=overflow.append)
    durations.record_server(("GET", "http", 200, "", "", "1.1"), 0.1)
    durations.record_server(("GET", "http", 404, "", "", "1.1"), 0.1)
    assert len(durations) == 1 and overflow == ["http.server.request.duration"]


def test_hand_encoding_matches_the_generated_protobuf_classes() -> None:
    durations = HttpDurations(start_ns=7, max_series=10, on_overflow=lambda _: None)
    durations.record_client(("GET", "orders", 8080, 503, "503", "1.1"), 0.02)
    durations.record_server(("GET", "http", 200, "", "", "1.1"), 0.5)
    encoded = durations.encode((("service.name", "web"), ("pid", 12)), now_ns=9)
    decoded = ExportMetricsServiceRequest()
    decoded.ParseFromString(encoded)
    (rm,) = decoded.resource_metrics
    assert rm.scope_metrics[0].scope.name == "meshlens.sidecar"
    points = {m.name: m.histogram.data_points[0] for m in rm.scope_metrics[0].metrics}
    server = points["http.server.request.duration"]
    assert {kv.key for kv in server.attributes} == {
        "http.request.method",
        "url.scheme",
        "http.response.status_code",
        "network.protocol.version",
    }
    assert server.min == server.max == 0.5 and server.HasField("sum")
    # re-serialising the decoded message gives the same bytes: no unknown or misplaced fields
    assert decoded.SerializeToString() == encoded


def _points(durations: HttpDurations) -> dict[str, list[tuple[object, ...]]]:
    request = ExportMetricsServiceRequest()
    request.ParseFromString(durations.encode((("service.name", "checkout"),), now_ns=5_000))
    out: dict[str, list[tuple[object, ...]]] = {}
    for metric in request.resource_metrics[0].scope_metrics[0].metrics:
        out[metric.name] = sorted(
            (
                tuple(sorted((kv.key, str(kv.value)) for kv in p.attributes)),
                p.count,
                round(p.sum, 9),
                tuple(p.bucket_counts),
                p.min,
                p.max,
            )
            for p in metric.histogram.data_points
        )
    return out


def test_plain_records_equal_the_general_ones_and_share_the_cap() -> None:
    general = HttpDurations(start_ns=1, max_series=4, on_overflow=lambda _: None)
    overflow: list[str] = []
    plain = HttpDurations(start_ns=1, max_series=4, on_overflow=overflow.append)
    clients = [
        ("orders", "GET", 8080, 200, "1.1", 0.004),
        ("orders", "GET", 8080, 200, "1.1", 0.3),
        ("orders", "POST", 8080, 200, "1.1", 0.02),  # another method: rebinds the server
        ("orders", "GET", 8080, 204, "1.1", 0.01),
        ("orders", "GET", 9090, 200, "2", 0.01),
        ("users", "GET", 80, 200, "1.1", 0.5),  # past the cap of 4 series
    ]
    for server, method, port, status, version, s in clients:
        general.record_client((method, server, port, status, "", version), s)
        plain.record_client_plain(server, method, port, status, version, s)
    general.record_client(("GET", "orders", 8080, 503, "503", "1.1"), 0.1)
    plain.record_client(("GET", "orders", 8080, 503, "503", "1.1"), 0.1)
    servers = [("pay", "GET", "http", 200, "1.1", 0.1), ("pay", "GET", "https", 200, "1.1", 0.2)]
    for route, method, scheme, status, version, s in servers * 2:
        general.record_server((method, scheme, status, route, "", version), s)
        plain.record_server_plain(route, method, scheme, status, version, s)
    assert _points(plain) == _points(general)
    assert len(_points(plain)["http.client.request.duration"]) == 4
    assert overflow == ["http.client.request.duration"] * 2
