"""REST trace API under /api/v1: search, trace by id, services, operations (viewer token needed).

Times are ISO 8601 (or unix seconds) in, ns since the epoch out; durations are Go-style strings
in (`250ms`, `1.5s`), ns out. Bad parameters answer 422 `{"error", "message"}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from analytics.controlplane.errors import InvalidRequest, NotFound, Unavailable
from analytics.deps import ReaderDep
from analytics.traces.query import (
    Cursor,
    InvalidQuery,
    TraceQuery,
    normalize_trace_id,
    parse_attribute_filter,
    parse_go_duration,
)
from analytics.traces.schemas import (
    OperationOut,
    SearchOut,
    ServicesOut,
    TraceOut,
    span_out,
    summary_out,
)
from analytics.traces.service import TraceNotFound, TraceService
from collector.store import StoreUnavailable

__all__ = ["get_trace_service", "get_wall_clock", "router", "translate_errors"]

router = APIRouter(prefix="/api/v1", tags=["traces"])

SEARCH_WINDOW_NS = 3600 * 10**9
LIST_WINDOW_NS = 7 * 24 * 3600 * 10**9
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def get_trace_service(request: Request) -> TraceService:
    return TraceService(request.app.state.store)


def get_wall_clock(request: Request) -> Callable[[], float]:
    clock: Callable[[], float] = getattr(request.app.state, "wall_clock", time.time)
    return clock


TraceServiceDep = Annotated[TraceService, Depends(get_trace_service)]
WallClockDep = Annotated[Callable[[], float], Depends(get_wall_clock)]
Start = Annotated[datetime | None, Query(description="window start (ISO 8601 or unix seconds)")]
End = Annotated[datetime | None, Query(description="window end, exclusive (default now)")]


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn query/store failures into the API's JSON errors (422, 404, 503)."""
    try:
        yield
    except InvalidQuery as exc:
        raise InvalidRequest(str(exc)) from exc
    except TraceNotFound as exc:
        raise NotFound(str(exc)) from exc
    except StoreUnavailable as exc:
        raise Unavailable(f"the trace store is unavailable: {exc}") from exc


def _ns(moment: datetime) -> int:
    # A time without a zone is UTC (the store's zone), never the server's local time.
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1) * 1000


def _window(
    start: datetime | None, end: datetime | None, now: float, default_ns: int
) -> tuple[int, int]:
    end_ns = _ns(end) if end is not None else int(now * 1e9)
    start_ns = _ns(start) if start is not None else end_ns - default_ns
    if end_ns <= start_ns:
        raise InvalidQuery("end must be after start")
    return start_ns, end_ns


def _duration(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_go_duration(text)
    except InvalidQuery as exc:
        raise InvalidQuery(f"{name}: {exc}") from exc


def _title(text: str | None) -> str | None:
    return None if text is None else text[:1].upper() + text[1:].lower()


@router.get("/traces", response_model=SearchOut)
async def search_traces(
    principal: ReaderDep,
    traces: TraceServiceDep,
    now: WallClockDep,
    service: str | None = None,
    operation: str | None = None,
    span_kind: Annotated[str | None, Query(description="server, client, ...")] = None,
    status: Annotated[str | None, Query(description="span status: ok, error, unset")] = None,
    min_duration: Annotated[str | None, Query(description="span duration >=, e.g. 100ms")] = None,
    max_duration: Annotated[str | None, Query(description="span duration <=")] = None,
    min_trace_duration: Annotated[str | None, Query(description="whole trace >=")] = None,
    max_trace_duration: Annotated[str | None, Query(description="whole trace <=")] = None,
    attr: Annotated[
        list[str], Query(description="span attribute filter: k=v, k!=v, k=~re2, k!~re2")
    ] = [],  # noqa: B006 - FastAPI copies query defaults
    start: Start = None,
    end: End = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> SearchOut:
    """Traces with at least one span matching every filter, newest match first."""
    with translate_errors():
        lo, hi = _window(start, end, now(), SEARCH_WINDOW_NS)
        query = TraceQuery(
            start_ns=lo,
            end_ns=hi,
            service=service,
            operation=operation,
            span_kind=_title(span_kind),
            status=_title(status),
            min_span_duration_ns=_duration("min_duration", min_duration),
            max_span_duration_ns=_duration("max_duration", max_duration),
            min_trace_duration_ns=_duration("min_trace_duration", min_trace_duration),
            max_trace_duration_ns=_duration("max_trace_duration", max_trace_duration),
            attributes=tuple(parse_attribute_filter(a) for a in attr),
            limit=limit,
            cursor=Cursor.decode(cursor) if cursor else None,
        )
        page = await traces.search(query)
    return SearchOut(
        traces=[summary_out(hit) for hit in page.traces],
        next_cursor=page.next_cursor.encode() if page.next_cursor else None,
    )


@router.get("/traces/{trace_id}", response_model=TraceOut)
async def get_trace(
    principal: ReaderDep,
    traces: TraceServiceDep,
    trace_id: Annotated[str, Path(description="1 to 32 hex digits")],
    start: Start = None,
    end: End = None,
) -> TraceOut:
    """Every span of one trace, in start order (404 if none is stored)."""
    with translate_errors():
        tid = normalize_trace_id(trace_id)
        lo = _ns(start) if start is not None else 0
        hi = _ns(end) if end is not None else 2**62
        spans = await traces.trace(tid, lo_ns=lo, hi_ns=hi)
    return TraceOut(trace_id=tid, spans=[span_out(s) for s in spans])


@router.get("/services", response_model=ServicesOut)
async def list_services(
    principal: ReaderDep,
    traces: TraceServiceDep,
    now: WallClockDep,
    start: Start = None,
    end: End = None,
) -> ServicesOut:
    """Services with spans in the window (default: the last 7 days)."""
    with translate_errors():
        lo, hi = _window(start, end, now(), LIST_WINDOW_NS)
        return ServicesOut(services=await traces.services(lo, hi))


@router.get("/services/{service}/operations", response_model=list[OperationOut])
async def list_operations(
    principal: ReaderDep,
    traces: TraceServiceDep,
    now: WallClockDep,
    service: str,
    span_kind: str | None = None,
    start: Start = None,
    end: End = None,
) -> list[OperationOut]:
    """Span names of a service with their kinds, in the window (default: the last 7 days)."""
    with translate_errors():
        lo, hi = _window(start, end, now(), LIST_WINDOW_NS)
        pairs = await traces.operations(service, lo, hi, kind=_title(span_kind))
    return [OperationOut(name=name, span_kind=kind) for name, kind in pairs]
