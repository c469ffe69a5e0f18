"""The Telemetry object: config validation, /metrics text, OTLP export of spans and metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sidecar.http import Request, Response
from sidecar.stack import compose
from sidecar.telemetry import Telemetry, TelemetryConfig
from sidecar.telemetry.transport import TransportResult
from tests.unit.sidecar.telemetry.promtext import parse_prometheus


class RecordingTransport:
    """The collector edge: accepts everything and keeps what was posted."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []

    async def post(self, path: str, body: bytes) -> TransportResult:
        self.posts.append((path, body))
        return TransportResult(200)

    async def close(self) -> None:
        return None


async def ok(_request: Request) -> Response:
    return Response(200, body=b"ok")


def test_config_lists_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as info:
        TelemetryConfig(service="", sample_ratio=2.0, collector_url="ftp://x")
    message = str(info.value)
    assert "service" in message and "sample_ratio" in message and "collector_url" in message


async def test_spans_and_metrics_reach_the_collector_with_the_resource() -> None:
    transport = RecordingTransport()
    telemetry = Telemetry(
        TelemetryConfig(service="checkout", instance="checkout-7"), transport=transport
    )
    handler = compose([telemetry.inbound_layer()], ok)
    await handler(Request("GET", "/", authority="checkout"))
    await telemetry.flush()

    paths = [p for p, _ in transport.posts]
    assert paths == ["/v1/traces", "/v1/metrics"]
    traces = ExportTraceServiceRequest()
    traces.ParseFromString(transport.posts[0][1])
    resource = {
        kv.key: kv.value.string_value for kv in traces.resource_spans[0].resource.attributes
    }
    assert resource["service.name"] == "checkout"
    assert resource["service.instance.id"] == "checkout-7"
    assert len(traces.resource_spans[0].scope_spans[0].spans) == 1
    metrics = ExportMetricsServiceRequest()
    metrics.ParseFromString(transport.posts[1][1])
    names = [m.name for m in metrics.resource_metrics[0].scope_metrics[0].metrics]
    assert names == ["http.server.request.duration"]
    await telemetry.shutdown()
    _, samples = parse_prometheus(telemetry.prometheus_text())
    exported = [v for n, _, v in samples if n == "meshlens_sidecar_spans_exported_total"]
    assert exported == [1]


async def test_without_a_collector_spans_are_dropped_and_counted() -> None:
    telemetry = Telemetry(TelemetryConfig(service="checkout"))
    await compose([telemetry.inbound_layer()], ok)(Request("GET", "/", authority="checkout"))
    await telemetry.flush()
    _, samples = parse_prometheus(telemetry.prometheus_text())
    dropped = {
        lb["reason"]: v for n, lb, v in samples if n == "meshlens_sidecar_spans_dropped_total"
    }
    assert dropped == {"no_collector": 1}
    assert telemetry.stats()["spans_dropped"] == {"no_collector": 1}
    await telemetry.shutdown()


async def test_prometheus_text_has_istio_and_meshlens_metrics() -> None:
    telemetry = Telemetry(TelemetryConfig(service="checkout"))
    telemetry.set_config_version("v1")
    telemetry.set_config_version("v2")
    await compose([telemetry.outbound_layer()], ok)(Request("GET", "/", authority="orders:80"))
    types, samples = parse_prometheus(telemetry.prometheus_text())
    assert types["istio_requests_total"] == "counter"
    assert types["istio_request_duration_milliseconds"] == "histogram"
    assert types["meshlens_sidecar_spans_dropped_total"] == "counter"
    info = [lb for n, lb, _ in samples if n == "meshlens_sidecar_config_info"]
    assert info == [{"version": "v2"}]  # only the active version
    (labels,) = [lb for n, lb, _ in samples if n == "istio_requests_total"]
    assert labels["destination_service_name"] == "orders"  # passthrough host without port
    assert telemetry.stats()["spans_queued"] == 1


async def test_sampling_ratio_zero_records_no_spans_for_new_traces() -> None:
    telemetry = Telemetry(TelemetryConfig(service="checkout", sample_ratio=0.0))
    await compose([telemetry.inbound_layer()], ok)(Request("GET", "/", authority="checkout"))
    assert telemetry.stats()["spans_queued"] == 0
    _, samples = parse_prometheus(telemetry.prometheus_text())
    unsampled = [v for n, _, v in samples if n == "meshlens_sidecar_requests_unsampled_total"]
    assert unsampled == [1]


async def test_access_log_file_is_written_and_shutdown_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    telemetry = Telemetry(TelemetryConfig(service="checkout", access_log=str(path)))
    await telemetry.start()
    await compose([telemetry.inbound_layer()], ok)(Request("GET", "/x", authority="checkout"))
    await telemetry.shutdown()
    await telemetry.shutdown()
    (line,) = path.read_text().splitlines()
    assert '"direction":"inbound"' in line and '"status":200' in line
