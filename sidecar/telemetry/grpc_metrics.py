"""Per-method gRPC request metrics (the Istio metrics have no method dimension).

`meshlens_sidecar_grpc_requests_total` and `meshlens_sidecar_grpc_request_duration_milliseconds`
with labels reporter, destination_service_name, grpc_method, grpc_response_status. `grpc_method`
is `/package.Service/Method` from the request path as layers/grpc.py parsed it (format-checked
there); the number of distinct methods is capped: later methods are reported as `other` and
counted in `meshlens_sidecar_grpc_method_overflow_total`.
"""

from __future__ import annotations

import re

from sidecar.http import AttrValue
from sidecar.telemetry.istio import DURATION_BUCKETS_MS
from sidecar.telemetry.metrics import Registry

__all__ = ["OTHER", "UNKNOWN", "GrpcMethodMetrics", "grpc_method"]

OTHER = "other"  # methods past the cap
UNKNOWN = "unknown"  # a gRPC request whose path is not /package.Service/Method
_LABELS = ("reporter", "destination_service_name", "grpc_method", "grpc_response_status")
_SERVICE = re.compile(r"[A-Za-z_][\w.]{0,99}")
_METHOD = re.compile(r"[A-Za-z_]\w{0,63}")


def grpc_method(attrs: dict[str, AttrValue]) -> str:
    """`/package.Service/Method` from the rpc.service / rpc.method attributes, else `unknown`."""
    service, method = attrs.get("rpc.service"), attrs.get("rpc.method")
    if (
        isinstance(service, str)
        and isinstance(method, str)
        and _SERVICE.fullmatch(service)
        and _METHOD.fullmatch(method)
    ):
        return f"/{service}/{method}"
    return UNKNOWN


class GrpcMethodMetrics:
    """The two per-method metrics, registered on the sidecar's registry."""

    __slots__ = ("_count", "_duration", "_max_methods", "_methods", "overflow")

    def __init__(self, registry: Registry, *, max_methods: int = 200) -> None:
        if max_methods < 1:
            raise ValueError(f"max_methods must be >= 1, got {max_methods}")
        self._max_methods = max_methods
        self._methods: set[str] = set()
        self._count = registry.counter(
            "meshlens_sidecar_grpc_requests_total",
            "gRPC requests, per reporter, destination service, method and gRPC status.",
            _LABELS,
        )
        self._duration = registry.histogram(
            "meshlens_sidecar_grpc_request_duration_milliseconds",
            "gRPC request duration (ms), per reporter, destination service, method and status.",
            _LABELS,
            DURATION_BUCKETS_MS,
        )
        self.overflow = registry.counter(
            "meshlens_sidecar_grpc_method_overflow_total",
            'gRPC requests reported as grpc_method="other": the distinct-method cap was reached.',
            ("reporter",),
        )

    def _bounded(self, method: str, reporter: str) -> str:
        if method in self._methods:
            return method
        if len(self._methods) < self._max_methods:
            self._methods.add(method)
            return method
        self.overflow.inc((reporter,))
        return OTHER

    def record(
        self, *, outbound: bool, service: str, method: str, status: str, duration_ms: float
    ) -> str:
        """Count one gRPC request; `status` is the gRPC status code as text ("" if none came).
        Returns the method label used (`method`, or `other` past the cap)."""
        reporter = "source" if outbound else "destination"
        bounded = self._bounded(method, reporter)
        labels = (reporter, service or UNKNOWN, bounded, status)
        self._count.inc(labels)
        self._duration.observe(labels, duration_ms)
        return bounded

    def value(self, *, outbound: bool, service: str, method: str, status: str) -> float:
        """The request count of one series (0 if absent)."""
        reporter = "source" if outbound else "destination"
        return self._count.value((reporter, service, method, status))
