from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from collector.otlp.metrics import METRIC_TABLES, decode_metrics
from tests.unit.collector.helpers import gauge_request, kv


def test_gauge_points_become_rows_with_second_precision_times() -> None:
    batch = decode_metrics(gauge_request([1.5, 2.0]))
    cols = batch.tables["otel_metrics_gauge"]
    assert batch.accepted == 2
    assert cols["MetricName"] == ["queue.depth", "queue.depth"]
    assert cols["ServiceName"] == ["worker", "worker"]
    assert cols["Value"] == [1.5, 2.0]
    assert cols["TimeUnix"] == [1_700_000_000, 1_700_000_001]
    assert cols["Exemplars.Value"] == [[], []]
    assert len({len(values) for values in cols.values()}) == 1


def _request_with_every_type() -> metrics_service_pb2.ExportMetricsServiceRequest:
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    total = scope.metrics.add(name="requests")
    total.sum.is_monotonic = True
    total.sum.aggregation_temporality = 2
    point = total.sum.data_points.add(as_int=7, time_unix_nano=2_000_000_000)
    point.attributes.append(kv("route", "/a"))
    exemplar = point.exemplars.add(as_double=0.5, span_id=b"\x01" * 8, trace_id=b"\x02" * 16)
    exemplar.time_unix_nano = 3_000_000_000
    hist = scope.metrics.add(name="latency", unit="s")
    hist.histogram.data_points.add(
        count=3, sum=0.6, bucket_counts=[1, 2, 0], explicit_bounds=[0.1, 0.5], min=0.1, max=0.3
    )
    exp = scope.metrics.add(name="exp")
    exp_point = exp.exponential_histogram.data_points.add(count=2, scale=1, zero_count=1)
    exp_point.positive.offset = 2
    exp_point.positive.bucket_counts.extend([1])
    summary = scope.metrics.add(name="summary")
    summary_point = summary.summary.data_points.add(count=4, sum=2.0)
    summary_point.quantile_values.add(quantile=0.5, value=0.4)
    return request


def test_each_metric_type_goes_to_its_table() -> None:
    batch = decode_metrics(_request_with_every_type())
    assert set(batch.tables) == {
        METRIC_TABLES["sum"],
        METRIC_TABLES["histogram"],
        METRIC_TABLES["exponential_histogram"],
        METRIC_TABLES["summary"],
    }
    sums = batch.tables["otel_metrics_sum"]
    assert sums["Value"] == [7.0] and sums["IsMonotonic"] == [True]
    assert sums["AggregationTemporality"] == [2]
    assert sums["Attributes"] == [{"route": "/a"}]
    assert sums["Exemplars.TraceId"] == [["02" * 16]]
    assert sums["Exemplars.TimeUnix"] == [[3]]
    hist = batch.tables["otel_metrics_histogram"]
    assert hist["BucketCounts"] == [[1, 2, 0]] and hist["ExplicitBounds"] == [[0.1, 0.5]]
    assert hist["MetricUnit"] == ["s"]
    exp = batch.tables["otel_metrics_exponential_histogram"]
    assert exp["PositiveOffset"] == [2] and exp["PositiveBucketCounts"] == [[1]]
    summary = batch.tables["otel_metrics_summary"]
    assert summary["ValueAtQuantiles.Quantile"] == [[0.5]]
    for cols in batch.tables.values():
        assert len({len(values) for values in cols.values()}) == 1


def test_points_without_value_or_with_bad_buckets_are_rejected() -> None:
    request = gauge_request([1.0])
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
    metric.gauge.data_points.add(time_unix_nano=1)
    hist = request.resource_metrics[0].scope_metrics[0].metrics.add(name="h")
    hist.histogram.data_points.add(bucket_counts=[1], explicit_bounds=[0.1, 0.2])

    batch = decode_metrics(request)

    assert (batch.accepted, batch.rejected) == (1, 2)
    assert "neither as_double nor as_int" in batch.error_message


def test_points_with_times_out_of_the_stores_range_are_rejected() -> None:
    # TimeUnix is DateTime (UInt32 seconds, to 2106-02-07)
    request = gauge_request([1.0, 2.0, 3.0])
    points = request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points
    points[0].time_unix_nano = 2**64 - 1
    points[1].exemplars.add(time_unix_nano=2**32 * 10**9, as_double=1.0)

    batch = decode_metrics(request)

    assert (batch.accepted, batch.rejected) == (1, 2)
    assert "out of the store's range" in batch.error_message
