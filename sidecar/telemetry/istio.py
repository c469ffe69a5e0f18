"""Istio standard request metrics (istio_requests_total and three histograms) with Istio's labels.

Outbound requests are reported with `reporter="source"`, inbound ones with `reporter="destination"`,
as a pair of Istio sidecars would; `response_flags` are Envoy's flags derived from our proxy error
reasons. Every label value comes from config, discovery or a closed set; series are capped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sidecar.telemetry.metrics import bucket_index, format_value, label_string, render_histogram

__all__ = [
    "DURATION_BUCKETS_MS",
    "SIZE_BUCKETS_BYTES",
    "IstioMetrics",
    "IstioPair",
    "IstioWorkload",
    "response_flags",
]

# Envoy's default histogram buckets (source/common/stats/histogram_impl.cc), used by Istio.
# Typed as variable-length tuples: compiled, a fixed-length tuple type would be unboxed into a
# C struct and boxed again (a new tuple of new floats) on every use.
DURATION_BUCKETS_MS: Final[tuple[float, ...]] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip
SIZE_BUCKETS_BYTES: Final[tuple[float, ...]] = (1, 10, 100, 1000, 10000, 100000, 1e6, 1e7, 1e8, 1e9)

# Our ProxyError reasons -> Envoy %RESPONSE_FLAGS%.
_FLAGS: Final = {
    "connect_failure": "UF",
    "overflow": "UO",
    "retry_budget_exhausted": "URX",
    "upstream_timeout": "UT",
    "per_try_timeout": "UT",
    "no_route": "NR",
    "rate_limited": "RL",
    "fault_abort": "FI",
    "upstream_reset": "UC",
    "no_healthy_upstream": "UH",
    "circuit_open": "UH",
    "upstream_protocol_error": "UPE",
    "bad_request": "DPE",
    "headers_too_large": "DPE",
    "body_too_large": "DPE",
    "rbac_denied": "UAEX",
    "unauthenticated": "UAEX",
}

_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_canonical_service",
    "source_principal",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_canonical_service",
    "destination_principal",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
    "grpc_response_status",
)


def response_flags(error_reason: str, fault_delayed: bool) -> str:
    """Envoy-style response flags for a request: its error reason's flag, DI when delayed, or -."""
    flag = _FLAGS.get(error_reason, "") if error_reason else ""
    if fault_delayed:
        flag = f"DI,{flag}" if flag else "DI"
    return flag or "-"


@dataclass(frozen=True, slots=True)
class IstioWorkload:
    """This sidecar's side of the labels."""

    service: str
    workload: str = ""
    namespace: str = "default"
    principal: str = ""  # our SPIFFE id when the mesh speaks mTLS

    def __post_init__(self) -> None:
        if not self.service:
            raise ValueError("service must not be empty")


# peer service, peer principal, response code, flags, security policy, protocol, grpc status
_Key = tuple[str, str, int, str, str, str, str]


class _Series:
    __slots__ = (
        "count",
        "duration",
        "duration_sum",
        "labels",
        "req",
        "req_sum",
        "resp",
        "resp_sum",
    )

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.count = 0
        self.duration = [0] * (len(DURATION_BUCKETS_MS) + 1)
        self.duration_sum = 0.0
        self.req = [0] * (len(SIZE_BUCKETS_BYTES) + 1)
        self.req_sum = 0
        self.resp = [0] * (len(SIZE_BUCKETS_BYTES) + 1)
        self.resp_sum = 0


def _count(series: _Series, duration_ms: float, request_bytes: int, response_bytes: int) -> None:
    series.count += 1
    series.duration[bucket_index(DURATION_BUCKETS_MS, duration_ms)] += 1
    series.duration_sum += duration_ms
    series.req[bucket_index(SIZE_BUCKETS_BYTES, request_bytes)] += 1
    series.req_sum += request_bytes
    series.resp[bucket_index(SIZE_BUCKETS_BYTES, response_bytes)] += 1
    series.resp_sum += response_bytes


class _Bound:
    """The plain-HTTP series of one peer (its principal and security policy), by status."""

    __slots__ = ("by_status", "principal", "security")

    def __init__(self, principal: str, security: str) -> None:
        self.principal = principal
        self.security = security
        self.by_status: dict[int, _Series] = {}


class IstioMetrics:
    """One reporter's (source or destination) Istio request metrics."""

    __slots__ = ("_max_series", "_on_overflow", "_outbound", "_plain", "_series", "_workload")

    def __init__(
        self,
        workload: IstioWorkload,
        *,
        outbound: bool,
        max_series: int,
        on_overflow: Callable[[str], None],
    ) -> None:
        self._workload = workload
        self._outbound = outbound
        self._max_series = max_series
        self._on_overflow = on_overflow
        self._series: dict[_Key, _Series] = {}
        self._plain: dict[str, _Bound] = {}  # record_plain's series, per peer then status

    def record(
        self,
        key: _Key,
        duration_ms: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        """Count one request; `key` = (peer service, peer principal, status, flags, security,
        protocol, grpc status)."""
        series = self._series_for(key)
        if series is not None:
            _count(series, duration_ms, request_bytes, response_bytes)

    def record_plain(
        self,
        peer: str,
        principal: str,
        status: int,
        security: str,
        duration_ms: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        """`record((peer, principal, status, "-", security, "http", ""), ...)`: a plain HTTP
        exchange without response flags, the common case. Its series are bound per peer once
        (a dict by status), so a request looks up two small keys instead of a 7-label tuple."""
        bound = self._plain.get(peer)
        if bound is not None and bound.principal == principal and bound.security == security:
            series = bound.by_status.get(status)
            if series is not None:
                _count(series, duration_ms, request_bytes, response_bytes)
                return
        series = self._series_for((peer, principal, status, "-", security, "http", ""))
        if series is None:
            return
        if bound is None or bound.principal != principal or bound.security != security:
            bound = self._plain[peer] = _Bound(principal, security)  # (bounded: one per peer)
        bound.by_status[status] = series
        _count(series, duration_ms, request_bytes, response_bytes)

    def _series_for(self, key: _Key) -> _Series | None:
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self._max_series:
                self._on_overflow("istio_requests_total")
                return None
            series = _Series(self._label_text(key))
            self._series[key] = series
        return series

    def _label_text(self, key: _Key) -> str:
        peer, peer_principal, code, flags, security, protocol, grpc_status = key
        me = self._workload
        own = (me.workload or me.service, me.namespace, me.service, me.principal or "unknown")
        other = (peer or "unknown", "unknown", peer or "unknown", peer_principal or "unknown")
        if self._outbound:
            src, dst, reporter = own, other, "source"
        else:
            src, dst, reporter = other, own, "destination"
        values = (
            reporter,
            src[0],
            src[1],
            src[2],
            src[3],
            dst[2],
            dst[2],
            dst[1],
            dst[0],
            dst[1],
            dst[2],
            dst[3],
            protocol,
            str(code),
            flags,
            security,
            grpc_status,
        )
        return label_string(_LABELS, values)

    def render_metric(self, lines: list[str], name: str) -> None:
        """Sample lines (no header) of one of the four metrics."""
        durations = tuple(format_value(b) for b in DURATION_BUCKETS_MS)
        sizes = tuple(format_value(b) for b in SIZE_BUCKETS_BYTES)
        for s in self._series.values():
            if name == "istio_requests_total":
                lines.append(f"istio_requests_total{{{s.labels}}} {s.count}")
            elif name == "istio_request_duration_milliseconds":
                render_histogram(lines, name, s.labels, durations, s.duration, s.duration_sum)
            elif name == "istio_request_bytes":
                render_histogram(lines, name, s.labels, sizes, s.req, s.req_sum)
            else:
                render_histogram(lines, name, s.labels, sizes, s.resp, s.resp_sum)


class IstioPair:
    """The source and destination reporters rendered together, one header per metric name."""

    __slots__ = ("inbound", "outbound")

    _HELP = (
        ("istio_requests_total", "counter", "Requests handled, per Istio reporter."),
        ("istio_request_duration_milliseconds", "histogram", "Request duration (ms)."),
        ("istio_request_bytes", "histogram", "Request body sizes (bytes)."),
        ("istio_response_bytes", "histogram", "Response body sizes (bytes)."),
    )

    def __init__(self, outbound: IstioMetrics, inbound: IstioMetrics) -> None:
        self.outbound = outbound
        self.inbound = inbound

    def render_into(self, lines: list[str]) -> None:
        for name, kind, help_text in self._HELP:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            self.outbound.render_metric(lines, name)
            self.inbound.render_metric(lines, name)
