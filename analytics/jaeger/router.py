"""Jaeger query API under /jaeger: v1 (`/jaeger/api/...`, what Grafana's Jaeger datasource calls)
and api_v3 (`/jaeger/api/v3/...`, OTLP JSON). Shapes and units as Jaeger's; see README.md here.

Reads need a viewer (or operator) token, as for the rest of the API: `Authorization: Bearer <t>`,
or HTTP basic auth with the token as password (any user name), which Grafana sends when the
datasource has basic auth on. Bad parameters answer 400 in Jaeger's error shape.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from analytics.controlplane.errors import ControlPlaneError, Unauthenticated
from analytics.jaeger.mapping import jaeger_kind, jaeger_trace
from analytics.jaeger.otlp_json import traces_data
from analytics.jaeger.params import parse_int, parse_rfc3339, parse_time_us, v1_search, v3_search
from analytics.traces.query import InvalidQuery, normalize_trace_id
from analytics.traces.router import get_wall_clock
from analytics.traces.service import TraceNotFound, TraceService
from collector.store import StoreUnavailable

__all__ = ["router"]

router = APIRouter(prefix="/jaeger/api", tags=["jaeger"])

LIST_WINDOW_NS = 7 * 24 * 3600 * 10**9
DEFAULT_DEPENDENCY_LOOKBACK_MS = 24 * 3600 * 1000
_END = 2**62

Work = Callable[[TraceService, int], Awaitable[Any]]


def _authorize(request: Request) -> None:
    header = request.headers.get("authorization")
    if header is not None and header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthenticated("malformed basic authorization header") from exc
        header = "Bearer " + decoded.partition(":")[2]
    principal = request.app.state.control_plane.auth.authenticate(
        authorization=header,
        client_cert=None,
        signature=None,
        method=request.method,
        target=request.url.path,
        body=b"",
    )
    principal.require_reader()


async def _run(request: Request, work: Work) -> tuple[int, Any, str]:
    """(status, result, error message) of `work` after authorization."""
    try:
        _authorize(request)
        now_ns = int(get_wall_clock(request)() * 1e9)
        return 200, await work(TraceService(request.app.state.store), now_ns), ""
    except ControlPlaneError as exc:
        return exc.status, None, exc.message
    except InvalidQuery as exc:
        return 400, None, str(exc)
    except TraceNotFound:
        return 404, None, "trace not found"
    except StoreUnavailable as exc:
        return 503, None, f"the trace store is unavailable: {exc}"


async def _v1(request: Request, work: Work) -> JSONResponse:
    status, data, message = await _run(request, work)
    if status != 200:
        body = {
            "data": None,
            "total": 0,
            "limit": 0,
            "offset": 0,
            "errors": [{"code": status, "msg": message}],
        }
        return JSONResponse(body, status_code=status)
    total = len(data) if isinstance(data, list) else 0
    return JSONResponse({"data": data, "total": total, "limit": 0, "offset": 0, "errors": None})


async def _v3(request: Request, work: Work) -> JSONResponse:
    status, data, message = await _run(request, work)
    if status != 200:
        return JSONResponse({"error": {"httpCode": status, "message": message}}, status_code=status)
    return JSONResponse(data)


@router.get("/services")
async def v1_services(request: Request) -> JSONResponse:
    """Service names with spans in the last 7 days."""

    async def work(traces: TraceService, now_ns: int) -> list[str]:
        return await traces.services(now_ns - LIST_WINDOW_NS, now_ns + 1)

    return await _v1(request, work)


@router.get("/services/{service}/operations")
async def v1_service_operations(request: Request, service: str) -> JSONResponse:
    """Unique span names of `service` (all kinds)."""

    async def work(traces: TraceService, now_ns: int) -> list[str]:
        pairs = await traces.operations(service, now_ns - LIST_WINDOW_NS, now_ns + 1)
        return sorted({name for name, _ in pairs})

    return await _v1(request, work)


@router.get("/operations")
async def v1_operations(request: Request) -> JSONResponse:
    """`?service=` (required) `&spanKind=`: `[{"name", "spanKind"}]`."""

    async def work(traces: TraceService, now_ns: int) -> list[dict[str, str]]:
        service = request.query_params.get("service")
        if not service:
            raise InvalidQuery("parameter 'service' is required")
        kind = request.query_params.get("spanKind") or None
        pairs = await traces.operations(
            service, now_ns - LIST_WINDOW_NS, now_ns + 1, kind=kind.capitalize() if kind else None
        )
        return [{"name": name, "spanKind": jaeger_kind(k)} for name, k in pairs]

    return await _v1(request, work)


@router.get("/traces")
async def v1_search_traces(request: Request) -> JSONResponse:
    """Search: service, operation, tags (JSON) / tag (k:v), start, end (µs), minDuration,
    maxDuration (Go durations), limit (default 100); or traceID (repeatable) to fetch ids."""

    async def work(traces: TraceService, now_ns: int) -> list[dict[str, Any]]:
        query, ids = v1_search(request.query_params, now_ns)
        if query is None:
            grouped = await traces.traces(ids)
            return [jaeger_trace(grouped[i]) for i in ids if i in grouped]
        return [jaeger_trace(spans) for spans in await traces.search_spans(query)]

    return await _v1(request, work)


def _v1_window(request: Request) -> tuple[int, int]:
    raw_start, raw_end = request.query_params.get("start"), request.query_params.get("end")
    lo = parse_time_us("start", raw_start) if raw_start else 0
    # Grafana's end is the range end in ms; a span starting in that last ms still belongs.
    hi = parse_time_us("end", raw_end) + 1_000_000 if raw_end else _END
    return lo, hi


@router.get("/traces/{trace_id}")
async def v1_trace(request: Request, trace_id: str) -> JSONResponse:
    """One trace; optional start/end (µs, or ms as Grafana sends) bound the read."""

    async def work(traces: TraceService, now_ns: int) -> list[dict[str, Any]]:
        lo, hi = _v1_window(request)
        return [jaeger_trace(await traces.trace(normalize_trace_id(trace_id), lo_ns=lo, hi_ns=hi))]

    return await _v1(request, work)


@router.get("/dependencies")
async def v1_dependencies(request: Request) -> JSONResponse:
    """`endTs` (unix ms, default now), `lookback` (ms, default 24h): caller -> callee counts."""

    async def work(traces: TraceService, now_ns: int) -> list[dict[str, Any]]:
        raw_end, raw_back = request.query_params.get("endTs"), request.query_params.get("lookback")
        end_ms = parse_int("endTs", raw_end) if raw_end else now_ns // 1_000_000
        lookback = parse_int("lookback", raw_back) if raw_back else DEFAULT_DEPENDENCY_LOOKBACK_MS
        if lookback <= 0:
            raise InvalidQuery("unable to parse param 'lookback': must be > 0")
        edges = await traces.dependencies(end_ms - lookback, end_ms)
        return [{"parent": p, "child": c, "callCount": n} for p, c, n in edges]

    return await _v1(request, work)


@router.get("/v3/services")
async def v3_services(request: Request) -> JSONResponse:
    """`{"services": [...]}` (last 7 days)."""

    async def work(traces: TraceService, now_ns: int) -> dict[str, Any]:
        return {"services": await traces.services(now_ns - LIST_WINDOW_NS, now_ns + 1)}

    return await _v3(request, work)


@router.get("/v3/operations")
async def v3_operations(request: Request) -> JSONResponse:
    """`?service=&spanKind=` (or `span_kind`): `{"operations": [{"name", "spanKind"}]}`."""

    async def work(traces: TraceService, now_ns: int) -> dict[str, Any]:
        service = request.query_params.get("service")
        if not service:
            raise InvalidQuery("parameter 'service' is required")
        kind = request.query_params.get("spanKind") or request.query_params.get("span_kind")
        pairs = await traces.operations(
            service, now_ns - LIST_WINDOW_NS, now_ns + 1, kind=kind.capitalize() if kind else None
        )
        ops = [{"name": name, "spanKind": jaeger_kind(k) or "internal"} for name, k in pairs]
        return {"operations": ops}

    return await _v3(request, work)


@router.get("/v3/traces")
async def v3_search_traces(request: Request) -> JSONResponse:
    """`query.service_name`, `query.start_time_min/max` (required, RFC 3339), ...; 404 if none."""

    async def work(traces: TraceService, now_ns: int) -> dict[str, Any]:
        found = await traces.search_spans(v3_search(request.query_params))
        if not found:
            raise TraceNotFound("No traces found")
        return {"result": traces_data(span for spans in found for span in spans)}

    status, data, message = await _run(request, work)
    if status == 404:
        message = "No traces found"
    if status != 200:
        return JSONResponse({"error": {"httpCode": status, "message": message}}, status_code=status)
    return JSONResponse(data)


@router.get("/v3/traces/{trace_id}")
async def v3_trace(request: Request, trace_id: str) -> JSONResponse:
    """One trace as OTLP JSON; `startTime`/`endTime` (or snake_case) RFC 3339 bound the read."""

    async def work(traces: TraceService, now_ns: int) -> dict[str, Any]:
        params = request.query_params
        raw_lo = params.get("startTime") or params.get("start_time")
        raw_hi = params.get("endTime") or params.get("end_time")
        lo = parse_rfc3339("start_time", raw_lo) if raw_lo else 0
        hi = parse_rfc3339("end_time", raw_hi) + 1 if raw_hi else _END
        spans = await traces.trace(normalize_trace_id(trace_id), lo_ns=lo, hi_ns=hi)
        return {"result": traces_data(spans)}

    return await _v3(request, work)
