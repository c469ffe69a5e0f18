"""OTel HTTP duration histograms (http.server/client.request.duration) and their OTLP encoding.

Recorded per request as a tuple of attribute values (a fixed schema per metric), aggregated with
cumulative temporality, and encoded as an ExportMetricsServiceRequest when the exporter flushes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from sidecar.http import AttrValue

__all__ = ["CLIENT_KEYS", "HTTP_DURATION_BUCKETS_S", "SERVER_KEYS", "HttpDurations"]

# semantic-conventions docs/http/http-metrics.md ExplicitBucketBoundaries.
HTTP_DURATION_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
SERVER_KEYS = (
    "http.request.method",
    "url.scheme",
    "http.response.status_code",
    "http.route",
    "error.type",
    "network.protocol.version",
)
CLIENT_KEYS = (
    "http.request.method",
    "server.address",
    "server.port",
    "http.response.status_code",
    "error.type",
    "network.protocol.version",
)
_CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE

Key = tuple[AttrValue, ...]


class _Hist:
    __slots__ = ("counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(HTTP_DURATION_BUCKETS_S) + 1)
        self.total = 0.0
        self.min = float("inf")
        self.max = 0.0


class HttpDurations:
    """Cumulative duration histograms for inbound (server) and outbound (client) requests."""

    __slots__ = ("_client", "_max_series", "_on_overflow", "_server", "_start_ns")

    def __init__(
        self, *, start_ns: int, max_series: int, on_overflow: Callable[[str], None]
    ) -> None:
        self._start_ns = start_ns
        self._max_series = max_series
        self._on_overflow = on_overflow
        self._server: dict[Key, _Hist] = {}
        self._client: dict[Key, _Hist] = {}

    def record_server(self, key: Key, seconds: float) -> None:
        """`key` holds the values of SERVER_KEYS in order ("" or 0 = absent)."""
        self._record(self._server, "http.server.request.duration", key, seconds)

    def record_client(self, key: Key, seconds: float) -> None:
        """`key` holds the values of CLIENT_KEYS in order ("" or 0 = absent)."""
        self._record(self._client, "http.client.request.duration", key, seconds)

    def _record(self, series: dict[Key, _Hist], name: str, key: Key, seconds: float) -> None:
        hist = series.get(key)
        if hist is None:
            if len(series) >= self._max_series:
                self._on_overflow(name)
                return
            hist = series[key] = _Hist()
        hist.counts[bisect.bisect_left(HTTP_DURATION_BUCKETS_S, seconds)] += 1
        hist.total += seconds
        if seconds < hist.min:
            hist.min = seconds
        if seconds > hist.max:
            hist.max = seconds

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    def encode(
        self,
        resource: Sequence[tuple[str, AttrValue]],
        now_ns: int,
        scope_name: str = "meshlens.sidecar",
    ) -> bytes:
        """An ExportMetricsServiceRequest holding both histograms (empty ones left out)."""
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        rm = request.resource_metrics.add()
        for key, value in resource:
            _set_attr(rm.resource.attributes.add(), key, value)
        sm = rm.scope_metrics.add()
        sm.scope.name = scope_name
        for name, keys, series in (
            ("http.server.request.duration", SERVER_KEYS, self._server),
            ("http.client.request.duration", CLIENT_KEYS, self._client),
        ):
            if series:
                self._encode_metric(sm.metrics.add(), name, keys, series, now_ns)
        return bytes(request.SerializeToString())

    def _encode_metric(
        self,
        metric: metrics_pb2.Metric,
        name: str,
        keys: Sequence[str],
        series: dict[Key, _Hist],
        now_ns: int,
    ) -> None:
        metric.name = name
        metric.unit = "s"
        metric.description = "Duration of HTTP " + name.split(".")[1] + " requests."
        metric.histogram.aggregation_temporality = _CUMULATIVE
        for values, hist in series.items():
            point = metric.histogram.data_points.add()
            for attr_key, attr_value in zip(keys, values, strict=True):
                if attr_value != "" and attr_value != 0:
                    _set_attr(point.attributes.add(), attr_key, attr_value)
            point.start_time_unix_nano = self._start_ns
            point.time_unix_nano = now_ns
            point.count = sum(hist.counts)
            point.sum = hist.total
            point.min = hist.min
            point.max = hist.max
            point.bucket_counts.extend(hist.counts)
            point.explicit_bounds.extend(HTTP_DURATION_BUCKETS_S)


def _set_attr(kv: common_pb2.KeyValue, key: str, value: AttrValue) -> None:
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value
