"""OTel HTTP duration histograms (http.server/client.request.duration), the gRPC ones per method
(rpc.server/client.call.duration) and their OTLP encoding.

Recorded per request as a tuple of attribute values (a fixed schema per metric), aggregated with
cumulative temporality, and encoded as an ExportMetricsServiceRequest when the exporter flushes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Final

from sidecar.http import AttrValue
from sidecar.telemetry.metrics import bucket_index
from sidecar.telemetry.otlp import encode_key_values, field

__all__ = ["CLIENT_KEYS", "HTTP_DURATION_BUCKETS_S", "RPC_KEYS", "SERVER_KEYS", "HttpDurations"]

# semantic-conventions docs/http/http-metrics.md ExplicitBucketBoundaries.
HTTP_DURATION_BUCKETS_S: Final[tuple[float, ...]] = (
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
# gRPC calls (the method label is capped by the caller: grpc_metrics.GrpcMethodMetrics)
RPC_KEYS = ("rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code", "server.address")
_DESCRIPTIONS = {
    "http.server.request.duration": "Duration of HTTP server requests.",
    "http.client.request.duration": "Duration of HTTP client requests.",
    "rpc.server.call.duration": "Duration of gRPC calls served, per method.",
    "rpc.client.call.duration": "Duration of gRPC calls made, per method.",
}
_CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_PACK_Q = struct.Struct("<Q").pack
_PACK_D = struct.Struct("<d").pack
# HistogramDataPoint.explicit_bounds (field 7, packed doubles): the same for every point.
_BOUNDS: Final = field(b"\x3a", b"".join(_PACK_D(bound) for bound in HTTP_DURATION_BUCKETS_S))

Key = tuple[AttrValue, ...]


class _Hist:
    __slots__ = ("counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(HTTP_DURATION_BUCKETS_S) + 1)
        self.total = 0.0
        self.min = float("inf")
        self.max = 0.0


def _add(hist: _Hist, seconds: float) -> None:
    hist.counts[bucket_index(HTTP_DURATION_BUCKETS_S, seconds)] += 1
    hist.total += seconds
    if seconds < hist.min:
        hist.min = seconds
    if seconds > hist.max:
        hist.max = seconds


class _Bound:
    """The error-free series of one server address or route (and its other labels), by status."""

    __slots__ = ("a", "b", "by_status", "c")

    def __init__(self, a: str, b: str | int, c: str) -> None:
        self.a, self.b, self.c = a, b, c
        self.by_status: dict[int, _Hist] = {}


class HttpDurations:
    """Cumulative duration histograms for inbound (server) and outbound (client) requests."""

    __slots__ = (
        "_client",
        "_client_plain",
        "_max_series",
        "_on_overflow",
        "_rpc_client",
        "_rpc_server",
        "_server",
        "_server_plain",
        "_start_ns",
    )

    def __init__(
        self, *, start_ns: int, max_series: int, on_overflow: Callable[[str], None]
    ) -> None:
        self._start_ns = start_ns
        self._max_series = max_series
        self._on_overflow = on_overflow
        self._server: dict[Key, _Hist] = {}
        self._client: dict[Key, _Hist] = {}
        self._server_plain: dict[str, _Bound] = {}  # record_*_plain's series, bound by route
        self._client_plain: dict[str, _Bound] = {}  # ... and by server address
        self._rpc_server: dict[Key, _Hist] = {}
        self._rpc_client: dict[Key, _Hist] = {}

    def record_server(self, key: Key, seconds: float) -> None:
        """`key` holds the values of SERVER_KEYS in order ("" or 0 = absent)."""
        self._record(self._server, "http.server.request.duration", key, seconds)

    def record_client(self, key: Key, seconds: float) -> None:
        """`key` holds the values of CLIENT_KEYS in order ("" or 0 = absent)."""
        self._record(self._client, "http.client.request.duration", key, seconds)

    def record_rpc(self, key: Key, seconds: float, *, client: bool) -> None:
        """`key` holds the values of RPC_KEYS in order ("" = absent)."""
        if client:
            self._record(self._rpc_client, "rpc.client.call.duration", key, seconds)
        else:
            self._record(self._rpc_server, "rpc.server.call.duration", key, seconds)

    def record_client_plain(
        self, server: str, method: str, port: int, status: int, version: str, seconds: float
    ) -> None:
        """`record_client((method, server, port, status, "", version), seconds)`: no error.
        The series are bound per server address once (a dict by status): two small lookups
        instead of a 6-value tuple per request."""
        bound = self._client_plain.get(server)
        if bound is not None and bound.a == method and bound.b == port and bound.c == version:
            hist = bound.by_status.get(status)
            if hist is not None:
                _add(hist, seconds)
                return
        key: Key = (method, server, port, status, "", version)
        hist = self._hist(self._client, "http.client.request.duration", key)
        if hist is None:
            return
        if bound is None or bound.a != method or bound.b != port or bound.c != version:
            bound = self._client_plain[server] = _Bound(method, port, version)
        bound.by_status[status] = hist
        _add(hist, seconds)

    def record_server_plain(
        self, route: str, method: str, scheme: str, status: int, version: str, seconds: float
    ) -> None:
        """`record_server((method, scheme, status, route, "", version), seconds)`: no error,
        bound per route like record_client_plain."""
        bound = self._server_plain.get(route)
        if bound is not None and bound.a == method and bound.b == scheme and bound.c == version:
            hist = bound.by_status.get(status)
            if hist is not None:
                _add(hist, seconds)
                return
        key: Key = (method, scheme, status, route, "", version)
        hist = self._hist(self._server, "http.server.request.duration", key)
        if hist is None:
            return
        if bound is None or bound.a != method or bound.b != scheme or bound.c != version:
            bound = self._server_plain[route] = _Bound(method, scheme, version)
        bound.by_status[status] = hist
        _add(hist, seconds)

    def _record(self, series: dict[Key, _Hist], name: str, key: Key, seconds: float) -> None:
        hist = self._hist(series, name, key)
        if hist is not None:
            _add(hist, seconds)

    def _hist(self, series: dict[Key, _Hist], name: str, key: Key) -> _Hist | None:
        hist = series.get(key)
        if hist is None:
            if len(series) >= self._max_series:
                self._on_overflow(name)
                return None
            hist = series[key] = _Hist()
        return hist

    def __len__(self) -> int:
        return len(self._server) + len(self._client) + len(self._rpc_server) + len(self._rpc_client)

    def encode(
        self,
        resource: Sequence[tuple[str, AttrValue]],
        now_ns: int,
        scope_name: str = "meshlens.sidecar",
    ) -> bytes:
        """An ExportMetricsServiceRequest holding the histograms (empty ones left out)."""
        # Encoded by hand like the spans (sidecar/telemetry/otlp.py): the generated protobuf
        # classes would cost the sidecar ~4 MB of RSS for one message every few seconds.
        metrics = [
            self._encode_metric(name, keys, series, now_ns)
            for name, keys, series in (
                ("http.server.request.duration", SERVER_KEYS, self._server),
                ("http.client.request.duration", CLIENT_KEYS, self._client),
                ("rpc.server.call.duration", RPC_KEYS, self._rpc_server),
                ("rpc.client.call.duration", RPC_KEYS, self._rpc_client),
            )
            if series
        ]
        scope = field(b"\x0a", field(b"\x0a", scope_name.encode()))  # ScopeMetrics.scope{name}
        scope_metrics = scope + b"".join(field(b"\x12", m) for m in metrics)
        resource_part = field(b"\x0a", encode_key_values(b"\x0a", resource))
        resource_metrics = resource_part + field(b"\x12", scope_metrics)
        return field(b"\x0a", resource_metrics)  # ExportMetricsServiceRequest.resource_metrics

    def _encode_metric(
        self, name: str, keys: Sequence[str], series: dict[Key, _Hist], now_ns: int
    ) -> bytes:
        """One Metric{name=1, description=2, unit=3, histogram=9}."""
        head = field(b"\x0a", name.encode()) + field(b"\x12", _DESCRIPTIONS[name].encode())
        head += field(b"\x1a", b"s")
        times = b"\x11" + _PACK_Q(self._start_ns) + b"\x19" + _PACK_Q(now_ns)
        points = []
        for values, hist in series.items():
            attrs = encode_key_values(
                b"\x4a",
                (
                    (attr_key, attr_value)
                    for attr_key, attr_value in zip(keys, values, strict=True)
                    if attr_value != "" and attr_value != 0
                ),
            )
            counts = b"".join(_PACK_Q(n) for n in hist.counts)
            point = (  # fields in number order, as protobuf writes them
                times
                + b"\x21"
                + _PACK_Q(sum(hist.counts))
                + b"\x29"
                + _PACK_D(hist.total)
                + field(b"\x32", counts)
                + _BOUNDS
                + attrs
                + b"\x59"
                + _PACK_D(hist.min)
                + b"\x61"
                + _PACK_D(hist.max)
            )
            points.append(field(b"\x0a", point))  # Histogram.data_points
        histogram = b"".join(points) + b"\x10" + bytes((_CUMULATIVE,))
        return head + field(b"\x4a", histogram)
