"""Sidecar telemetry: trace context, compact spans, OTLP export, Istio/Prometheus and OTel metrics.

Other parts use `Telemetry(TelemetryConfig(...))` and its layers; see facade.py.
"""

from __future__ import annotations

from sidecar.telemetry.facade import PROMETHEUS_CONTENT_TYPE, Telemetry, TelemetryConfig
from sidecar.telemetry.transport import RetryPolicy

__all__ = ["PROMETHEUS_CONTENT_TYPE", "RetryPolicy", "Telemetry", "TelemetryConfig"]
