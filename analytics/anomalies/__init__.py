"""Anomaly detection on per-minute RED series, and grouping of anomalies into incidents."""

from __future__ import annotations

from analytics.anomalies.detectors import (
    Anomaly,
    DetectorConfig,
    Point,
    detect_burn_rate,
    detect_change_points,
    detect_deviations,
    detect_edge_changes,
    detect_stopped_instances,
)
from analytics.anomalies.incidents import Incident, ServiceMap, group_incidents, opens_incident

__all__ = [
    "Anomaly",
    "DetectorConfig",
    "Incident",
    "Point",
    "ServiceMap",
    "detect_burn_rate",
    "detect_change_points",
    "detect_deviations",
    "detect_edge_changes",
    "detect_stopped_instances",
    "group_incidents",
    "opens_incident",
]
