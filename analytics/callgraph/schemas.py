"""Response models of the service-map API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

__all__ = [
    "EdgeOut",
    "EdgePointOut",
    "EdgeSeriesOut",
    "NodeOut",
    "RouteOut",
    "ServiceMapOut",
    "StatsOut",
]


class StatsOut(BaseModel):
    requests: int
    errors: int
    rate_per_s: float
    error_ratio: float
    mean_ms: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None


class RouteOut(BaseModel):
    route: str
    stats: StatsOut


class EdgeOut(BaseModel):
    caller: str
    callee: str
    stats: StatsOut
    routes: list[RouteOut]


class NodeOut(BaseModel):
    service: str
    virtual: bool
    server: StatsOut | None


class ServiceMapOut(BaseModel):
    start: datetime
    end: datetime
    source: Literal["aggregates", "spans"]
    nodes: list[NodeOut]
    edges: list[EdgeOut]


class EdgePointOut(BaseModel):
    minute: datetime
    caller: str
    callee: str
    stats: StatsOut


class EdgeSeriesOut(BaseModel):
    start: datetime
    end: datetime
    points: list[EdgePointOut]
