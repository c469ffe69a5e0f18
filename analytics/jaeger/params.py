"""Jaeger query parameters (v1 and api_v3) -> TraceQuery, with Jaeger's defaults and units.

v1: `start`/`end` in µs (values below 1e14 are taken as ms: Grafana sends ms for trace by id),
`minDuration`/`maxDuration` Go durations, `tags` a JSON object, `tag` repeatable `key:value`,
`limit` default 100. api_v3: `query.*` names in camelCase or snake_case, times RFC 3339 (ns).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from analytics.traces.query import (
    MAX_LIMIT,
    AttributeFilter,
    InvalidQuery,
    TraceQuery,
    normalize_trace_id,
    parse_go_duration,
)

__all__ = [
    "Params",
    "parse_rfc3339",
    "parse_time_us",
    "tag_query",
    "v1_search",
    "v3_search",
]

DEFAULT_LOOKBACK_NS = 48 * 3600 * 10**9
DEFAULT_LIMIT = 100
_MS_BELOW = 10**14
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)")


class Params(Protocol):
    """What both Starlette's QueryParams and a plain test double offer."""

    def get(self, key: str, /) -> str | None: ...

    def getlist(self, key: str) -> list[str]: ...


def _first(params: Params, *names: str) -> str | None:
    for name in names:
        value = params.get(name)
        if value is not None and value != "":
            return value
    return None


def parse_int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise InvalidQuery(f"unable to parse param '{name}': {text!r} is not an integer") from exc


def parse_time_us(name: str, text: str) -> int:
    """A v1 time parameter (µs since the epoch; < 1e14 means ms) as ns."""
    value = parse_int(name, text)
    if value < 0:
        raise InvalidQuery(f"unable to parse param '{name}': must not be negative")
    return value * 1_000_000 if value < _MS_BELOW else value * 1_000


def parse_rfc3339(name: str, text: str) -> int:
    """An RFC 3339 time with up to 9 fraction digits as ns since the epoch."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise InvalidQuery(f"unable to parse param '{name}': {text!r} is not an RFC 3339 time")
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        seconds = int(
            datetime.fromisoformat(base.replace("t", "T").replace(" ", "T") + zone).timestamp()
        )
    except ValueError as exc:
        raise InvalidQuery(f"unable to parse param '{name}': {exc}") from exc
    return seconds * 10**9 + int((fraction or "").ljust(9, "0"))


def _duration(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_go_duration(text)
    except InvalidQuery as exc:
        raise InvalidQuery(f"unable to parse param '{name}': {exc}") from exc


def tag_query(
    tags: Mapping[str, str],
) -> tuple[tuple[AttributeFilter, ...], str | None, str | None]:
    """Jaeger tags as (attribute filters, span status, span kind).

    `error=true|false`, `otel.status_code=OK|ERROR` and `span.kind=server` are the conventional
    tags the Jaeger model derives from status and kind; any other tag matches a span or resource
    attribute of that exact value.
    """
    filters: list[AttributeFilter] = []
    status: str | None = None
    kind: str | None = None
    for key, value in tags.items():
        if key == "error" and value in ("true", "false"):
            # No column says "not an error"; `error=false` therefore filters nothing.
            status = "Error" if value == "true" else status
        elif key == "otel.status_code" and value.upper() in ("OK", "ERROR", "UNSET"):
            status = value.capitalize()
        elif key == "span.kind":
            kind = value.capitalize()
        else:
            filters.append(AttributeFilter(key, "=", value, resource=True))
    return tuple(filters), status, kind


def _tags(params: Params, json_name: str, pair_name: str | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    if pair_name is not None:
        for pair in params.getlist(pair_name):
            key, sep, value = pair.partition(":")
            if not sep or not key:
                raise InvalidQuery(f"malformed '{pair_name}' parameter {pair!r}: expect key:value")
            tags[key] = value
    raw = params.get(json_name)
    if raw:
        try:
            decoded = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidQuery(f"malformed '{json_name}' parameter: {exc}") from exc
        except RecursionError as exc:
            raise InvalidQuery(f"malformed '{json_name}' parameter: nested too deeply") from exc
        if not isinstance(decoded, dict):
            raise InvalidQuery(f"malformed '{json_name}' parameter: expect a JSON object")
        for key, value in decoded.items():
            if isinstance(value, dict | list) or value is None:
                raise InvalidQuery(f"malformed '{json_name}' parameter: {key!r} is not a scalar")
            tags[str(key)] = json.dumps(value) if isinstance(value, bool) else str(value)
    return tags


def _limit(text: str | None, name: str) -> int:
    if text is None:
        return DEFAULT_LIMIT
    value = parse_int(name, text)
    return DEFAULT_LIMIT if value <= 0 else min(value, MAX_LIMIT)


def v1_search(params: Params, now_ns: int) -> tuple[TraceQuery | None, Sequence[str]]:
    """`/api/traces` parameters: a search, or (with `traceID`) the ids to fetch instead."""
    trace_ids = [normalize_trace_id(t) for t in params.getlist("traceID") if t]
    if trace_ids:
        return None, trace_ids
    service = _first(params, "service")
    if service is None:
        raise InvalidQuery("parameter 'service' is required")
    raw_end, raw_start = _first(params, "end"), _first(params, "start")
    end_ns = parse_time_us("end", raw_end) if raw_end else now_ns
    start_ns = parse_time_us("start", raw_start) if raw_start else end_ns - DEFAULT_LOOKBACK_NS
    attrs, status, kind = tag_query(_tags(params, "tags", "tag"))
    low = _duration("minDuration", _first(params, "minDuration"))
    high = _duration("maxDuration", _first(params, "maxDuration"))
    if low is not None and high is not None and high < low:
        raise InvalidQuery("'maxDuration' should be greater than 'minDuration'")
    return (
        TraceQuery(
            start_ns=start_ns,
            end_ns=end_ns,
            service=service,
            operation=_first(params, "operation"),
            span_kind=kind,
            status=status,
            min_span_duration_ns=low,
            max_span_duration_ns=high,
            attributes=attrs,
            limit=_limit(_first(params, "limit"), "limit"),
        ),
        (),
    )


def v3_search(params: Params) -> TraceQuery:
    """api_v3 `/api/v3/traces` parameters (camelCase or snake_case `query.*`)."""

    def get(camel: str, snake: str) -> str | None:
        return _first(params, f"query.{camel}", f"query.{snake}")

    raw_min = get("startTimeMin", "start_time_min")
    raw_max = get("startTimeMax", "start_time_max")
    if raw_min is None or raw_max is None:
        raise InvalidQuery("query.start_time_min and query.start_time_max are required")
    if get("filter", "filter") is not None:
        raise InvalidQuery("query.filter is not supported; use query.attributes")
    start_ns = parse_rfc3339("query.start_time_min", raw_min)
    end_ns = parse_rfc3339("query.start_time_max", raw_max)
    if end_ns <= start_ns:
        raise InvalidQuery("query.start_time_max must be after query.start_time_min")
    attrs, status, kind = tag_query(_tags(params, "query.attributes", None))
    depth = get("searchDepth", "search_depth") or _first(params, "query.num_traces")
    return TraceQuery(
        start_ns=start_ns,
        end_ns=end_ns,
        service=get("serviceName", "service_name"),
        operation=get("operationName", "operation_name"),
        span_kind=kind,
        status=status,
        min_span_duration_ns=_duration("query.duration_min", get("durationMin", "duration_min")),
        max_span_duration_ns=_duration("query.duration_max", get("durationMax", "duration_max")),
        attributes=attrs,
        limit=_limit(depth, "query.search_depth"),
    )
