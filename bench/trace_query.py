"""Trace query latency (analytics.traces) on many spans in the embedded store, next to naive SQL.

    .venv/bin/python bench/trace_query.py [--spans 1000000] [--data DIR] [--repeat 50]

With --data DIR holding at least --spans spans already, only the queries are timed again (a store
from an older schema is migrated first, filling the v5 summaries and v6 time-ordered copy; the
migration time is printed).

Generates realistic sidecar traces (8 spans each: SERVER/CLIENT hops through 4 of 12 services,
3 attributes, 2 resource attributes, 2% errors) over 24 hours, vectorised into Arrow batches of
1 M spans, inserted with `store.insert` (the trace-id lookup and edge/service views run: they are
part of the cost: since schema v5/v6 also the trace summaries and the time-ordered copy), then
times through `TraceService` (SQL + rows -> Python objects):
  trace by id          our query (bounded by the otel_traces_trace_id_ts lookup) vs a full scan
                       of otel_traces for the id (no time bound, skip indexes off)
  searches (limit 20)  our search SQL vs a GROUP BY TraceId over the whole table
and checks both give the same answer. p50/p99 in ms. README numbers: --spans 10000000.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.traces.query import AttributeFilter, TraceQuery
from analytics.traces.service import TraceService
from collector.store import Store, open_store
from collector.store.arrow import arrow_type

SERVICES = [f"svc-{i:02d}" for i in range(12)]
ROUTES = ["list", "get", "create", "update", "delete", "search", "health", "checkout"]
HOPS = 4
SPANS_PER_TRACE = 2 * HOPS
START_S = 1_780_000_000
SPAN_S = 24 * 3600
S = 10**9


def _strings(values: np.ndarray, dictionary: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(values, pa.int32()), pa.array(dictionary)
    ).dictionary_decode()


def _hex(count: int, width_bytes: int, rng: np.random.Generator) -> pa.Array:
    raw = rng.integers(0, 256, size=count * width_bytes, dtype=np.uint8).tobytes()
    width = 2 * width_bytes
    offsets = np.arange(0, count * width + 1, width, dtype=np.int32)
    return pa.StringArray.from_buffers(
        count, pa.py_buffer(offsets.tobytes()), pa.py_buffer(binascii.hexlify(raw))
    )


def _map(keys: list[str], values: list[pa.Array], count: int) -> pa.Array:
    width = len(keys)
    offsets = pa.array(np.arange(0, count * width + 1, width, dtype=np.int32))
    key_arr = _strings(np.tile(np.arange(width, dtype=np.int32), count), keys)
    # Interleave per-key value arrays: row i holds values[0][i], values[1][i], ...
    order = (np.arange(count * width) % width) * count + np.arange(count * width) // width
    flat = pa.concat_arrays(values).take(pa.array(order))
    return pa.MapArray.from_arrays(offsets, key_arr, flat)


def _empty_lists(count: int, kind: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(
        pa.array(np.zeros(count + 1, dtype=np.int32)), pa.array([], kind.value_type)
    )


def batch(
    traces: int, rng: np.random.Generator, types: dict[str, str]
) -> tuple[dict[str, pa.Array], list[str]]:
    """Columns for `traces` traces of SPANS_PER_TRACE spans (span j's parent is span j-1)."""
    n = traces * SPANS_PER_TRACE
    j = np.tile(np.arange(SPANS_PER_TRACE), traces)
    trace_start = rng.integers(START_S * S, (START_S + SPAN_S) * S, size=traces)
    path = rng.integers(0, len(SERVICES), size=(traces, HOPS))
    hop = j // 2
    client = (j % 2 == 1) & (hop < HOPS - 1)
    service = path.repeat(SPANS_PER_TRACE, axis=0)[np.arange(n), hop]
    upstream = path.repeat(SPANS_PER_TRACE, axis=0)[np.arange(n), np.minimum(hop + 1, HOPS - 1)]
    route = rng.integers(0, len(ROUTES), size=n)
    error = rng.random(n) < 0.02
    ts = trace_start.repeat(SPANS_PER_TRACE) + j * 2_000_000 + rng.integers(0, 1000, size=n)
    duration = (rng.lognormal(16, 0.8, size=n) / (1 + j)).astype(np.uint64) + 1000
    trace_ids = _hex(traces, 16, rng)
    span_ids = _hex(n, 8, rng)
    parent = pa.concat_arrays([pa.array([""]), span_ids.slice(0, n - 1)])
    parent = pc.if_else(pa.array(j == 0), pa.scalar(""), parent)
    kinds = np.where(client, 1, np.where(j == SPANS_PER_TRACE - 1, 2, 0))
    names = np.where(client, len(ROUTES), route)
    status_code = np.where(error, 1, 0)
    cols: dict[str, pa.Array] = {
        "Timestamp": pa.array(ts, pa.timestamp("ns")),
        "TraceId": trace_ids.take(pa.array(np.arange(n) // SPANS_PER_TRACE)),
        "SpanId": span_ids,
        "ParentSpanId": parent,
        "TraceState": pa.array(np.full(n, ""), pa.string()),
        "SpanName": _strings(names, [f"GET /{r}" for r in ROUTES] + ["GET"]),
        "SpanKind": _strings(kinds, ["Server", "Client", "Internal"]),
        "ServiceName": _strings(service, SERVICES),
        "ResourceAttributes": _map(
            ["service.name", "host.name"],
            [
                _strings(service, SERVICES),
                _strings(rng.integers(0, 20, size=n), [f"node-{i}" for i in range(20)]),
            ],
            n,
        ),
        "ScopeName": _strings(np.zeros(n, dtype=np.int32), ["meshlens.sidecar"]),
        "ScopeVersion": _strings(np.zeros(n, dtype=np.int32), ["0.1.0"]),
        "SpanAttributes": _map(
            ["http.response.status_code", "meshlens.route", "meshlens.upstream"],
            [
                _strings(status_code, ["200", "503"]),
                _strings(route, ROUTES),
                pc.if_else(pa.array(client), _strings(upstream, SERVICES), pa.scalar("")),
            ],
            n,
        ),
        "Duration": pa.array(duration, pa.uint64()),
        "StatusCode": _strings(status_code, ["Unset", "Error"]),
        "StatusMessage": pa.array(np.full(n, ""), pa.string()),
    }
    for name in ("Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId",
                 "Links.SpanId", "Links.TraceState", "Links.Attributes"):  # fmt: skip
        cols[name] = _empty_lists(n, arrow_type(types[name]))
    sample = trace_ids.take(pa.array(rng.integers(0, traces, size=20))).to_pylist()
    return cols, sample


async def fill(store: Store, spans: int, seed: int = 11) -> tuple[float, list[str]]:
    rows = await store.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase()"
        " AND table = 'otel_traces' AND default_kind = ''"
    )
    types = {r["name"]: r["type"] for r in rows}
    rng = np.random.default_rng(seed)
    per_batch = 1_000_000 // SPANS_PER_TRACE
    total_traces = spans // SPANS_PER_TRACE
    ids: list[str] = []
    spent = 0.0
    done = 0
    while done < total_traces:
        count = min(per_batch, total_traces - done)
        cols, sample = batch(count, rng, types)
        began = time.perf_counter()
        await store.insert("otel_traces", cols)
        spent += time.perf_counter() - began
        ids += sample
        done += count
    return spent, ids


NAIVE_TRACE = """
SELECT TraceId, SpanId, ParentSpanId, SpanName, ServiceName, SpanAttributes, ResourceAttributes,
       toUnixTimestamp64Nano(Timestamp) AS start_ns, Duration, StatusCode, Events.Name
FROM otel_traces WHERE TraceId = {id:String}
ORDER BY Timestamp
SETTINGS use_skip_indexes = 0
"""


def naive_search(query: TraceQuery) -> tuple[str, dict[str, Any]]:
    """The same answer as the search, the obvious way: group every span of the table by trace."""
    conds = [
        "Timestamp >= fromUnixTimestamp64Nano({lo:Int64})",
        "Timestamp < fromUnixTimestamp64Nano({hi:Int64})",
    ]
    params: dict[str, Any] = {"lo": query.start_ns, "hi": query.end_ns}
    if query.service:
        conds.append("ServiceName = {service:String}")
        params["service"] = query.service
    if query.operation:
        conds.append("SpanName = {operation:String}")
        params["operation"] = query.operation
    for i, flt in enumerate(query.attributes):
        op = (
            "match(SpanAttributes[{k%d:String}], {v%d:String})"
            if flt.op == "=~"
            else "SpanAttributes[{k%d:String}] = {v%d:String}"
        )
        conds.append(op % (i, i))
        params[f"k{i}"], params[f"v{i}"] = flt.key, flt.value
    having = f"countIf({' AND '.join(conds)}) > 0"
    if query.min_trace_duration_ns is not None:
        end = "max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration))"
        having += f" AND {end} - toUnixTimestamp64Nano(min(Timestamp)) >= {{mind:Int64}}"
        params["mind"] = query.min_trace_duration_ns
    sql = f"""
SELECT TraceId, toUnixTimestamp64Nano(maxIf(Timestamp, {" AND ".join(conds)})) AS m
FROM otel_traces GROUP BY TraceId HAVING {having}
ORDER BY m DESC, TraceId DESC LIMIT {query.limit}
SETTINGS use_skip_indexes = 0
"""
    return sql, params


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> tuple[list[float], Any]:
    samples, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = await call()
        samples.append((time.perf_counter() - began) * 1000)
    return samples, result


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(label: str, ours: list[float], naive: list[float]) -> None:
    ours_p50, naive_p50 = statistics.median(ours), statistics.median(naive)
    print(
        f"{label:50} {ours_p50:8.1f} {pct(ours, 0.99):8.1f}"
        f" {naive_p50:9.1f} {pct(naive, 0.99):9.1f} {naive_p50 / ours_p50:7.1f}x"
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--data", help="engine directory (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        # A kept --data store from before schema v5 is migrated (and its summaries filled) here.
        store = open_store(f"chdb://{Path(args.data or scratch) / 'ch'}", timeout_s=600)
        try:
            began = time.perf_counter()
            version = await store.migrate()
            print(f"schema at version {version} ({time.perf_counter() - began:.1f}s to migrate)")
            count = "SELECT toInt64(count()) AS n FROM otel_traces"
            if args.data and (await store.query(count))[0]["n"] >= args.spans:
                # A kept --data directory: time the queries again without inserting.
                sample = "SELECT TraceId FROM otel_traces_trace_id_ts ORDER BY cityHash64(TraceId)"
                ids = [r["TraceId"] for r in await store.query(sample + " LIMIT 20")]
                print(f"reusing {(await store.query(count))[0]['n']} spans in {args.data}")
            else:
                insert_s, ids = await fill(store, args.spans)
                total = (await store.query(count))[0]["n"]
                rate = total / insert_s
                print(f"{total} spans inserted in {insert_s:.1f}s ({rate:,.0f} spans/s, views on)")
            await storage(store)
            await report(TraceService(store), store, ids, args.repeat)
        finally:
            await store.close()
    return 0


async def storage(store: Store) -> None:
    """Bytes on disk per stored span, per trace table (the search tables cost space too)."""
    rows = await store.query(
        "SELECT table, toInt64(sum(bytes_on_disk)) AS b FROM system.parts"
        " WHERE active AND database = currentDatabase() GROUP BY table ORDER BY table"
    )
    spans = (await store.query("SELECT toInt64(count()) AS n FROM otel_traces"))[0]["n"]
    sizes = {r["table"]: r["b"] / max(spans, 1) for r in rows}
    shown = ["otel_traces", "meshlens_trace_summaries", "meshlens_spans_by_time"]
    print("B/span: " + ", ".join(f"{t} {sizes[t]:.1f}" for t in shown if t in sizes))


async def report(service: TraceService, store: Store, ids: list[str], repeat: int) -> None:
    print(
        f"{'query (ms)':50} {'p50':>8} {'p99':>8} {'naive p50':>9} {'naive p99':>9} {'speedup':>8}"
    )
    cycle = iter(ids * (repeat // len(ids) + 1))
    ours, spans = await timed(lambda: service.trace(next(cycle)), repeat)
    cycle = iter(ids * (repeat // len(ids) + 1))
    naive_repeat = max(3, repeat // 10)
    naive, naive_rows = await timed(
        lambda: store.query(NAIVE_TRACE, {"id": next(cycle)}), naive_repeat
    )
    assert len(spans) == len(naive_rows) == SPANS_PER_TRACE, (len(spans), len(naive_rows))
    row("trace by id (lookup-bounded)", ours, naive)
    hour = 3600 * S
    lo = (START_S + 12 * 3600) * S
    status_503 = (AttributeFilter("http.response.status_code", "=", "503"),)
    route_re = (AttributeFilter("meshlens.route", "=~", "^check"),)
    searches = [
        ("service + operation, 1 h", TraceQuery(lo, lo + hour, "svc-03", "GET /get")),
        (
            "service + attr status=503, 1 h",
            TraceQuery(lo, lo + hour, "svc-05", attributes=status_503),
        ),
        ("attr regex route=~^check, 15 min", TraceQuery(lo, lo + hour // 4, attributes=route_re)),
        (
            "service + whole trace >= 2 ms, 1 h",
            TraceQuery(lo, lo + hour, "svc-07", min_trace_duration_ns=2_000_000),
        ),
    ]
    for label, query in searches:
        ours, page = await timed(lambda q=query: service.search(q), repeat)  # type: ignore[misc]
        sql, params = naive_search(query)
        naive, rows = await timed(lambda s=sql, p=params: store.query(s, p), naive_repeat)  # type: ignore[misc]
        got = [t.trace_id for t in page.traces]
        assert got == [r["TraceId"] for r in rows], (label, got[:3], rows[:3])
        row(f"search: {label} ({len(got)} hits)", ours, naive)
    print(f"(naive: {naive_repeat} runs each; ours: {repeat}; cores: {os.cpu_count()})")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
