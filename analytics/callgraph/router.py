"""HTTP layer of the service map: GET /api/v1/services/map and GET /api/v1/edges/series.

Both take `from` / `to` (ISO 8601, unix seconds, `now`, `now-15m`; default: the last hour) and
`source` (`auto`: aggregates when the window has any, else raw spans; `aggregates`; `spans`).
Map: `{start, end, source, nodes: [{service, virtual, server: stats|null}], edges: [{caller,
callee, stats, routes: [{route, stats}]}]}`; stats = requests, errors, rate_per_s,
error_ratio, mean_ms, p50_ms, p90_ms, p99_ms (route percentiles are null unless
`route_percentiles=true`). Series (`caller`, `callee` required): `{start, end, points:
[{minute, caller, callee, stats}]}`. Readers need a viewer or operator token.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from analytics.callgraph.schemas import (
    EdgeOut,
    EdgePointOut,
    EdgeSeriesOut,
    NodeOut,
    RouteOut,
    ServiceMapOut,
    StatsOut,
)
from analytics.callgraph.service import Source, TimeWindow, edge_series, parse_time, service_map
from analytics.deps import ReaderDep
from collector.store import Store

__all__ = ["router", "window_from_query"]

router = APIRouter(prefix="/api/v1", tags=["service map"])

From = Annotated[str | None, Query(alias="from", description="ISO 8601, unix s, now-1h")]
To = Annotated[str | None, Query(alias="to", description="ISO 8601, unix s, now")]


def window_from_query(request: Request, start: str | None, end: str | None) -> TimeWindow:
    """The [from, to) window of a request (default: the last hour); 400 on bad input."""
    clock = getattr(request.app.state, "wall_clock", None)
    now = datetime.fromtimestamp(clock(), UTC) if clock else datetime.now(UTC)
    try:
        to = parse_time(end, now=now) if end else now
        return TimeWindow(parse_time(start, now=now) if start else to - timedelta(hours=1), to)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


@router.get("/services/map", response_model=ServiceMapOut)
async def get_map(
    request: Request,
    _: ReaderDep,
    start: From = None,
    end: To = None,
    source: Source = "auto",
    route_percentiles: bool = False,
) -> ServiceMapOut:
    window = window_from_query(request, start, end)
    graph = await service_map(_store(request), window, source, route_percentiles=route_percentiles)
    return ServiceMapOut(
        start=window.start,
        end=window.end,
        source=graph.source,
        nodes=[
            NodeOut(
                service=n.service,
                virtual=n.virtual,
                server=StatsOut(**asdict(n.server)) if n.server else None,
            )
            for n in graph.nodes
        ],
        edges=[
            EdgeOut(
                caller=e.caller,
                callee=e.callee,
                stats=StatsOut(**asdict(e.stats)),
                routes=[RouteOut(route=r, stats=StatsOut(**asdict(s))) for r, s in e.routes],
            )
            for e in graph.edges
        ],
    )


@router.get("/edges/series", response_model=EdgeSeriesOut)
async def get_edge_series(
    request: Request,
    _: ReaderDep,
    caller: Annotated[str, Query(min_length=1, max_length=256)],
    callee: Annotated[str, Query(min_length=1, max_length=256)],
    start: From = None,
    end: To = None,
    source: Source = "auto",
) -> EdgeSeriesOut:
    window = window_from_query(request, start, end)
    points = await edge_series(_store(request), window, caller=caller, callee=callee, source=source)
    return EdgeSeriesOut(
        start=window.start,
        end=window.end,
        points=[
            EdgePointOut(
                minute=p.minute, caller=p.caller, callee=p.callee, stats=StatsOut(**asdict(p.stats))
            )
            for p in points
        ],
    )
