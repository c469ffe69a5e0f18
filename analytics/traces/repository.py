"""ClickHouse queries over otel_traces for the trace APIs; every value is a `{name:Type}` parameter.

Searches bound `Timestamp` (partition pruning, the primary key) and put the service/operation
first so (ServiceName, SpanName, toDateTime(Timestamp)) narrows the scan; first pages without a
service find their hits in `meshlens_spans_by_time` (schema v6) instead; the hits' summaries come
from `meshlens_trace_summaries` (schema v5) when every span of the trace lies in the window the
summary is defined over, else (and on a store without that table) from grouping their spans.
Trace by id reads the `otel_traces_trace_id_ts` lookup first so the main table is read only in
the trace's window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from analytics.traces.query import (
    AttributeFilter,
    Cursor,
    EventRecord,
    LinkRecord,
    SpanRecord,
    TraceQuery,
    TraceSummary,
)
from collector.store import Store, StoreRejected

__all__ = ["TraceRepository"]

# Spans of a hit trace that start this long before/after the searched window still count for its
# extent; wider costs more rows read for every hit.
TRACE_SLACK_NS = 300 * 1_000_000_000
# Searches with trace-level bounds examine at most FILTER_ROUNDS * FILTER_DEPTH hits per page.
FILTER_DEPTH = 2000
FILTER_ROUNDS = 5
# Hits of a round are summarised in growing chunks (limit + 1 first, then CHUNK_GROWTH times more)
# so a page that fills early does not summarise the whole round.
CHUNK_GROWTH = 4
UNKNOWN_TABLE = 60  # ClickHouse error code: a meshlens table is absent (exporter-only store)
# First pages without a service read meshlens_spans_by_time: the newest PREFIX_FIRST * depth
# matching rows, then older slices sized by the traces per row seen, at most PREFIX_ROUNDS
# slices, before the GROUP BY over otel_traces.
PREFIX_FIRST = 2
PREFIX_ROUNDS = 3
PREFIX_MAX_ROWS = 2000
PREFIX_MAX_DEPTH = 200

_SPAN_COLUMNS = """
    TraceId AS trace_id, SpanId AS span_id, ParentSpanId AS parent_span_id,
    TraceState AS trace_state, SpanName AS name, SpanKind AS kind, ServiceName AS service,
    ResourceAttributes AS resource, ScopeName AS scope_name, ScopeVersion AS scope_version,
    SpanAttributes AS attributes, toUnixTimestamp64Nano(Timestamp) AS start_ns,
    toInt64(Duration) AS duration_ns, StatusCode AS status_code, StatusMessage AS status_message,
    arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp) AS event_ns,
    Events.Name AS event_names, Events.Attributes AS event_attributes,
    Links.TraceId AS link_trace_ids, Links.SpanId AS link_span_ids,
    Links.TraceState AS link_states, Links.Attributes AS link_attributes"""

_BY_IDS = f"""
SELECT {_SPAN_COLUMNS}
FROM otel_traces
WHERE TraceId IN {{ids:Array(String)}}
  AND Timestamp >= greatest(
        (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId IN {{ids:Array(String)}}),
        fromUnixTimestamp64Nano({{lo_ns:Int64}}))
  AND Timestamp < least(
        (SELECT max(End) + 1 FROM otel_traces_trace_id_ts WHERE TraceId IN {{ids:Array(String)}}),
        fromUnixTimestamp64Nano({{hi_ns:Int64}}))
ORDER BY TraceId, Timestamp, SpanId
"""

_SERVICES = """
SELECT DISTINCT ServiceName AS service
FROM otel_traces
WHERE Timestamp >= fromUnixTimestamp64Nano({lo_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({hi_ns:Int64})
ORDER BY service
"""

_OPERATIONS = """
SELECT SpanName AS name, SpanKind AS kind
FROM otel_traces
WHERE ServiceName = {service:String}
  AND Timestamp >= fromUnixTimestamp64Nano({lo_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({hi_ns:Int64})
GROUP BY name, kind
ORDER BY name, kind
"""

# Sidecar CLIENT spans aggregated per minute (meshlens_edges_1m) are the call graph.
_DEPENDENCIES = """
SELECT caller AS parent, callee AS child, toInt64(sum(count)) AS calls
FROM meshlens_edges_1m
WHERE minute >= toStartOfMinute(fromUnixTimestamp64Milli({lo_ms:Int64}))
  AND minute < fromUnixTimestamp64Milli({hi_ms:Int64})
GROUP BY parent, child
ORDER BY parent, child
"""


class _Params:
    """Collects parameters under generated names so filter text never holds a value."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any, ch_type: str) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{ch_type}}}"


def _attribute_condition(flt: AttributeFilter, params: _Params) -> str:
    key = params.add(flt.key, "String")
    value = params.add(flt.value, "String")
    maps = ["SpanAttributes"] + (["ResourceAttributes"] if flt.resource else [])
    if flt.op in ("=", "!="):
        # A missing key reads as '' in a Map, so `!=` also matches spans without the key.
        parts = [f"{m}[{key}] = {value}" for m in maps]
    else:
        parts = [f"match({m}[{key}], {value})" for m in maps]
    joined = " OR ".join(parts)
    return f"NOT ({joined})" if flt.op in ("!=", "!~") else f"({joined})"


def _span_conditions(query: TraceQuery, params: _Params) -> list[str]:
    conds = [
        f"Timestamp >= fromUnixTimestamp64Nano({params.add(query.start_ns, 'Int64')})",
        f"Timestamp < fromUnixTimestamp64Nano({params.add(query.end_ns, 'Int64')})",
    ]
    if query.service is not None:
        conds.insert(0, f"ServiceName = {params.add(query.service, 'String')}")
    if query.operation is not None:
        conds.insert(1, f"SpanName = {params.add(query.operation, 'String')}")
    if query.span_kind is not None:
        conds.append(f"SpanKind = {params.add(query.span_kind, 'String')}")
    if query.status is not None:
        conds.append(f"StatusCode = {params.add(query.status, 'String')}")
    if query.min_span_duration_ns is not None:
        conds.append(f"Duration >= {params.add(query.min_span_duration_ns, 'UInt64')}")
    if query.max_span_duration_ns is not None:
        conds.append(f"Duration <= {params.add(query.max_span_duration_ns, 'UInt64')}")
    conds.extend(_attribute_condition(flt, params) for flt in query.attributes)
    return conds


_SUMMARY = """
    toUnixTimestamp64Nano(min(Timestamp)) AS start_ns,
    max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration)) AS end_ns,
    toInt64(count()) AS span_count,
    toInt64(countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR'))) AS error_count,
    argMin(ServiceName, (ParentSpanId != '', Timestamp)) AS root_service,
    argMin(SpanName, (ParentSpanId != '', Timestamp)) AS root_name,
    arraySort(groupUniqArray(ServiceName)) AS services"""

# Summaries of known hits: the literal id set lets the TraceId bloom filter skip granules, and
# the window is the hits' own match times +- slack, not the whole searched range.
_SUMMARIES = f"""
SELECT TraceId AS trace_id,{_SUMMARY}
FROM otel_traces
WHERE TraceId IN {{ids:Array(String)}}
  AND Timestamp >= fromUnixTimestamp64Nano({{lo_ns:Int64}})
  AND Timestamp < fromUnixTimestamp64Nano({{hi_ns:Int64}})
GROUP BY TraceId
"""


# The same values from the per-trace summary table (partial rows merged by trace); start/last let
# the caller check that the trace lies inside its window, where both definitions agree.
_TABLE_SUMMARIES = """
SELECT TraceId AS trace_id,
    toUnixTimestamp64Nano(min(Start)) AS start_ns,
    toUnixTimestamp64Nano(max(LastStart)) AS last_ns,
    max(EndNs) AS end_ns,
    toInt64(sum(SpanCount)) AS span_count,
    toInt64(sum(ErrorCount)) AS error_count,
    argMinMerge(Root) AS root,
    tupleElement(root, 1) AS root_service,
    tupleElement(root, 2) AS root_name,
    arraySort(groupUniqArrayArray(Services)) AS services
FROM meshlens_trace_summaries
WHERE TraceId IN {ids:Array(String)}
GROUP BY TraceId
"""


def _cursor_condition(query: TraceQuery, params: _Params, stamp_expr: str, id_expr: str) -> str:
    if query.cursor is None:
        return ""
    stamp = params.add(query.cursor.match_ns, "Int64")
    trace = params.add(query.cursor.trace_id, "String")
    return f"({stamp_expr}, {id_expr}) < ({stamp}, {trace})"


def matches_sql(query: TraceQuery, depth: int | None = None) -> tuple[str, dict[str, Any]]:
    """Newest `depth` (default `limit + 1`: one extra tells "more") traces with a matching span."""
    params = _Params()
    match = " AND ".join(_span_conditions(query, params))
    after = _cursor_condition(query, params, "match_ns", "trace_id")
    sql = f"""
SELECT TraceId AS trace_id, toUnixTimestamp64Nano(max(Timestamp)) AS match_ns
FROM otel_traces
WHERE {match}
GROUP BY TraceId
{"HAVING " + after if after else ""}
ORDER BY match_ns DESC, trace_id DESC
LIMIT {query.limit + 1 if depth is None else depth}
"""
    return sql, params.values


# The newest matching spans of a window in time order; the trace ids are read for the returned
# rows only (lazy materialization), which is what makes this cheaper than grouping.
_NEWEST_SPANS = """
SELECT TraceId AS trace_id, toUnixTimestamp64Nano(Timestamp) AS ts
FROM {table}
WHERE {match}
ORDER BY Timestamp DESC
LIMIT {rows}
"""


def _newest_source(query: TraceQuery, depth: int) -> tuple[str, int] | None:
    """Where a page's hits can be found from the newest matching spans, and in at most how many
    slices: meshlens_spans_by_time (in time order) for a search without a service whose
    filters are all on its columns, else otel_traces (one slice: it has no time order, so each
    slice reads the whole window). None for later pages (the cursor is a per-trace bound) and
    deep rounds: those group."""
    if query.cursor is not None or depth > PREFIX_MAX_DEPTH:
        return None
    if (
        query.service is None
        and query.min_span_duration_ns is None
        and query.max_span_duration_ns is None
        and not any(flt.resource for flt in query.attributes)
    ):
        return "meshlens_spans_by_time", PREFIX_ROUNDS
    return "otel_traces", 1


def _window(matches: dict[str, int]) -> tuple[int, int]:
    """The span window a page of hits is summarised over: their match times +- the slack."""
    return min(matches.values()) - TRACE_SLACK_NS, max(matches.values()) + TRACE_SLACK_NS


def _summary(row: dict[str, Any], match_ns: int) -> TraceSummary:
    return TraceSummary(
        trace_id=row["trace_id"],
        match_ns=match_ns,
        start_ns=int(row["start_ns"]),
        end_ns=int(row["end_ns"]),
        span_count=int(row["span_count"]),
        error_count=int(row["error_count"]),
        root_service=row["root_service"],
        root_name=row["root_name"],
        services=tuple(row["services"]),
    )


def _span(row: dict[str, Any]) -> SpanRecord:
    events = tuple(
        EventRecord(int(t), str(n), dict(a))
        for t, n, a in zip(
            row["event_ns"], row["event_names"], row["event_attributes"], strict=True
        )
    )
    links = tuple(
        LinkRecord(str(t), str(s), str(st), dict(a))
        for t, s, st, a in zip(
            row["link_trace_ids"],
            row["link_span_ids"],
            row["link_states"],
            row["link_attributes"],
            strict=True,
        )
    )
    return SpanRecord(
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        parent_span_id=row["parent_span_id"],
        trace_state=row["trace_state"],
        name=row["name"],
        kind=row["kind"],
        service=row["service"],
        resource=dict(row["resource"]),
        scope_name=row["scope_name"],
        scope_version=row["scope_version"],
        attributes=dict(row["attributes"]),
        start_ns=int(row["start_ns"]),
        duration_ns=int(row["duration_ns"]),
        status_code=row["status_code"],
        status_message=row["status_message"],
        events=events,
        links=links,
    )


class TraceRepository:
    """The trace SQL, run on one store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def search(self, query: TraceQuery) -> tuple[list[TraceSummary], Cursor | None]:
        if query.has_trace_filter:
            return await self._filtered(query)
        hits = await self._summaries(await self._matches(query, query.limit + 1))
        if len(hits) <= query.limit:
            return hits, None
        last = hits[query.limit - 1]
        return hits[: query.limit], Cursor(last.match_ns, last.trace_id)

    async def _matches(self, query: TraceQuery, depth: int) -> dict[str, int]:
        """The newest `depth` hits (trace id -> match time) in (match time, id) descending order."""
        source = _newest_source(query, depth)
        if source is not None:
            found = await self._matches_by_time(query, depth, *source)
            if found is not None:
                return found
        sql, params = matches_sql(query, depth)
        return {r["trace_id"]: int(r["match_ns"]) for r in await self._store.query(sql, params)}

    async def _matches_by_time(
        self, query: TraceQuery, depth: int, table: str = "meshlens_spans_by_time", slices: int = 1
    ) -> dict[str, int] | None:
        """The same hits from the newest matching spans of `table`, read backwards in slices:
        a slice of R rows (R = the limit) holds every matching span newer than its oldest row's
        time T, and each trace's newest matching span newer than T is among them, so the traces
        seen so far, ordered by that span, are the newest hits (once there are `depth` of them,
        or the window holds no more); the next slice starts at T again (spans at T may have been
        cut). None: no such table, a slice of one time only, or still too few traces."""
        newest: dict[str, int] = {}
        until: int | None = None
        rows, read = PREFIX_FIRST * depth, 0
        for _ in range(slices):
            params = _Params()
            conds = _span_conditions(query, params)
            if until is not None:
                conds.append(f"Timestamp <= fromUnixTimestamp64Nano({params.add(until, 'Int64')})")
            sql = _NEWEST_SPANS.format(table=table, match=" AND ".join(conds), rows=rows)
            try:
                spans = await self._store.query(sql, params.values)
            except StoreRejected as exc:
                if exc.code != UNKNOWN_TABLE:
                    raise
                return None
            complete = len(spans) < rows  # the window holds no more
            cut = -1 if complete else min(int(row["ts"]) for row in spans)
            fresh: dict[str, int] = {}
            for row in spans:
                trace, stamp = row["trace_id"], int(row["ts"])
                if stamp > cut and trace not in newest and stamp > fresh.get(trace, -1):
                    fresh[trace] = stamp
            if not complete and not fresh and all(int(r["ts"]) == cut for r in spans):
                return None  # `rows` spans at one instant: no progress possible
            # Traces first seen in this slice rank after every trace of the newer slices.
            newest.update(sorted(fresh.items(), key=lambda hit: (hit[1], hit[0]), reverse=True))
            if len(newest) >= depth or complete:
                return dict(list(newest.items())[:depth])
            until = cut
            read += len(spans)
            # The next slice, sized by the traces per row seen so far.
            wanted = depth - len(newest)
            per_row = max(len(newest), 1) / read
            rows = min(
                PREFIX_MAX_ROWS, max(PREFIX_FIRST * wanted, math.ceil(1.5 * wanted / per_row))
            )
        return None

    async def _summaries(
        self, matches: dict[str, int], window: tuple[int, int] | None = None
    ) -> list[TraceSummary]:
        """Summaries of hits in match order over their spans in `window` (default: the hits'
        match times +- TRACE_SLACK_NS, see _SUMMARIES); traces the summary table holds entirely
        inside the window are read from it, the others by grouping their spans."""
        if not matches:
            return []
        lo_ns, hi_ns = window or _window(matches)
        rows = await self._table_summaries(list(matches), lo_ns, hi_ns)
        missing = [t for t in matches if t not in rows]
        if missing:
            params = {"ids": missing, "lo_ns": lo_ns, "hi_ns": hi_ns}
            rows.update((r["trace_id"], r) for r in await self._store.query(_SUMMARIES, params))
        return [_summary(rows[t], m) for t, m in matches.items() if t in rows]

    async def _table_summaries(
        self, ids: list[str], lo_ns: int, hi_ns: int
    ) -> dict[str, dict[str, Any]]:
        """Rows of the summary table for traces whose spans all start in [lo_ns, hi_ns); {}
        when the store has no such table."""
        try:
            rows = await self._store.query(_TABLE_SUMMARIES, {"ids": ids})
        except StoreRejected as exc:
            if exc.code != UNKNOWN_TABLE:
                raise
            return {}
        return {
            r["trace_id"]: r
            for r in rows
            if lo_ns <= int(r["start_ns"]) and int(r["last_ns"]) < hi_ns
        }

    async def _filtered(self, query: TraceQuery) -> tuple[list[TraceSummary], Cursor | None]:
        """Trace-level bounds: examine hits newest first in rounds of FILTER_DEPTH, keep those
        within bounds. After FILTER_ROUNDS rounds the page may be short; its cursor then points
        after the last trace examined, so the next page continues without skipping any."""
        low = query.min_trace_duration_ns or 0
        high = query.max_trace_duration_ns if query.max_trace_duration_ns is not None else 2**63
        kept: list[TraceSummary] = []
        cursor = query.cursor
        for _ in range(FILTER_ROUNDS):
            matches = await self._matches(replace(query, cursor=cursor), FILTER_DEPTH)
            window = _window(matches) if matches else (0, 0)
            hits = list(matches.items())
            start, size = 0, query.limit + 1
            while start < len(hits):
                chunk = dict(hits[start : start + size])
                start, size = start + size, size * CHUNK_GROWTH
                for hit in await self._summaries(chunk, window):
                    if low <= hit.duration_ns <= high:
                        kept.append(hit)
                    if len(kept) > query.limit:
                        last = kept[query.limit - 1]
                        return kept[: query.limit], Cursor(last.match_ns, last.trace_id)
            if len(matches) < FILTER_DEPTH:
                return kept, None
            tail = next(reversed(matches))
            cursor = Cursor(matches[tail], tail)
        return kept, cursor

    async def spans(
        self, trace_ids: Sequence[str], *, lo_ns: int = 0, hi_ns: int = 2**62
    ) -> list[SpanRecord]:
        """Every span of these traces (ordered by trace, then start), optionally within [lo, hi)."""
        if not trace_ids:
            return []
        params = {"ids": list(trace_ids), "lo_ns": lo_ns, "hi_ns": hi_ns}
        return [_span(row) for row in await self._store.query(_BY_IDS, params)]

    async def services(self, lo_ns: int, hi_ns: int) -> list[str]:
        rows = await self._store.query(_SERVICES, {"lo_ns": lo_ns, "hi_ns": hi_ns})
        return [r["service"] for r in rows]

    async def operations(self, service: str, lo_ns: int, hi_ns: int) -> list[tuple[str, str]]:
        params = {"service": service, "lo_ns": lo_ns, "hi_ns": hi_ns}
        return [(r["name"], r["kind"]) for r in await self._store.query(_OPERATIONS, params)]

    async def dependencies(self, lo_ms: int, hi_ms: int) -> list[tuple[str, str, int]]:
        rows = await self._store.query(_DEPENDENCIES, {"lo_ms": lo_ms, "hi_ms": hi_ms})
        return [(r["parent"], r["child"], int(r["calls"])) for r in rows]

    async def check_regex(self, pattern: str) -> None:
        """Compile `pattern` with the engine's own regex library (re2); StoreRejected if invalid."""
        await self._store.query("SELECT match('', {pattern:String}) AS ok", {"pattern": pattern})
