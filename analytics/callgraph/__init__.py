"""The service map: nodes and caller -> callee edges with RED metrics over any window."""

from __future__ import annotations

from analytics.callgraph.service import (
    Edge,
    EdgePoint,
    Node,
    ServiceMap,
    TimeWindow,
    edge_series,
    parse_time,
    service_map,
)

__all__ = [
    "Edge",
    "EdgePoint",
    "Node",
    "ServiceMap",
    "TimeWindow",
    "edge_series",
    "parse_time",
    "service_map",
]
