"""Service-map logic: windows, node and edge values, source choice (aggregates or raw spans)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from analytics.callgraph.repository import CallGraphRepository
from collector.store import Store

__all__ = [
    "Edge",
    "EdgePoint",
    "Node",
    "ServiceMap",
    "Source",
    "TimeWindow",
    "edge_series",
    "parse_time",
    "service_map",
]

Source = Literal["auto", "aggregates", "spans"]
_MAX_WINDOW = timedelta(days=31)


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive = UTC), unix seconds, `now` or `now-<N>(s|m|h|d)` as an aware UTC time."""
    current = now or datetime.now(UTC)
    raw = text.strip()
    if raw == "now":
        return current
    if raw.startswith("now-") and raw[-1:] in "smhd" and raw[4:-1].isdigit():
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[raw[-1]]
        return current - timedelta(**{unit: int(raw[4:-1])})
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"time {text!r} is not ISO 8601, unix seconds, 'now' or 'now-<N>(s|m|h|d)'"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """[start, end) in UTC; at most 31 days."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after its start {self.start}")
        if self.end - self.start > _MAX_WINDOW:
            raise ValueError("window must not exceed 31 days")

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class Stats:
    """RED over a window: count, errors, rate, error ratio, mean and percentiles in ms."""

    requests: int
    errors: int
    rate_per_s: float
    error_ratio: float
    mean_ms: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None


def _stats(row: Mapping[str, Any], seconds: float) -> Stats:
    requests, errors = int(row["requests"]), int(row["errors"])
    q: list[float | None] = [float(x) / 1e6 for x in row.get("q") or []] or [None, None, None]
    return Stats(
        requests=requests,
        errors=errors,
        rate_per_s=requests / max(seconds, 1.0),
        error_ratio=errors / requests if requests else 0.0,
        mean_ms=float(row["mean_ms"] or 0.0),
        p50_ms=q[0],
        p90_ms=q[1],
        p99_ms=q[2],
    )


@dataclass(frozen=True, slots=True)
class Edge:
    """caller -> callee over the window, in total and per route."""

    caller: str
    callee: str
    stats: Stats
    routes: tuple[tuple[str, Stats], ...]


@dataclass(frozen=True, slots=True)
class Node:
    """A service; `virtual` when it sent no spans (only seen as a callee)."""

    service: str
    virtual: bool
    server: Stats | None


@dataclass(frozen=True, slots=True)
class ServiceMap:
    window: TimeWindow
    source: Literal["aggregates", "spans"]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


async def _source(repo: CallGraphRepository, window: TimeWindow, source: Source) -> bool:
    """True when raw spans are to be read."""
    if source == "auto":
        return not await repo.has_aggregates(window.start, window.end)
    return source == "spans"


async def service_map(
    store: Store, window: TimeWindow, source: Source = "auto", *, route_percentiles: bool = False
) -> ServiceMap:
    """The map of `window`: from aggregates when any exist for it, else from raw spans.

    Edges carry percentiles; their routes carry them only with `route_percentiles` (slower).
    """
    repo = CallGraphRepository(store)
    raw = await _source(repo, window, source)
    start, end, seconds = window.start, window.end, window.seconds
    by_edge: dict[tuple[str, str], list[tuple[str, Stats]]] = defaultdict(list)
    for row in await repo.edges(start, end, raw=raw, by_route=True, quantiles=route_percentiles):
        by_edge[(row["caller"], row["callee"])].append((row["route"], _stats(row, seconds)))
    totals = await repo.edges(start, end, raw=raw, by_route=False, quantiles=True)
    edges = tuple(
        Edge(
            r["caller"], r["callee"], _stats(r, seconds), tuple(by_edge[(r["caller"], r["callee"])])
        )
        for r in totals
    )
    servers = {
        row["service"]: _stats(row, window.seconds)
        for row in await repo.services(window.start, window.end, raw=raw)
    }
    senders = set(servers) | {e.caller for e in edges}
    names = sorted(senders | {e.callee for e in edges})
    nodes = tuple(Node(n, n not in senders, servers.get(n)) for n in names)
    return ServiceMap(window, "spans" if raw else "aggregates", nodes, edges)


@dataclass(frozen=True, slots=True)
class EdgePoint:
    """RED of one edge in one minute."""

    minute: datetime
    caller: str
    callee: str
    stats: Stats


async def edge_series(
    store: Store,
    window: TimeWindow,
    *,
    caller: str = "",
    callee: str = "",
    source: Source = "auto",
) -> list[EdgePoint]:
    """Per-minute RED of edges (one edge when caller and callee are given)."""
    repo = CallGraphRepository(store)
    raw = await _source(repo, window, source)
    rows = await repo.series(window.start, window.end, raw=raw, caller=caller, callee=callee)
    return [
        EdgePoint(
            datetime.fromtimestamp(int(r["minute_s"]), UTC),
            r["caller"],
            r["callee"],
            _stats(r, 60.0),
        )
        for r in rows
    ]
