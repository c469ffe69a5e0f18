"""Insert throughput of `store.insert("otel_traces", ...)` next to a raw Arrow insert, same engine.

    .venv/bin/python bench/store_insert.py [--rows 200000] [--batch 20000] [--data DIR]

Three paths write the same realistic spans into three databases of one embedded engine, each with
the full schema (so the trace-id lookup and edge/service views run for all of them):
  store.insert, Python columns   what the collector does (lists of ints/str/dicts)
  store.insert, Arrow arrays     the same through the store with ready pyarrow arrays
  raw Arrow insert (baseline)    a prebuilt Arrow table straight into chdb, no store code
  raw Arrow insert, no views     the same into a copy of otel_traces without views (view cost)
Then OPTIMIZE FINAL and bytes on disk per span from system.parts.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.store import Store, open_store
from collector.store.arrow import to_arrow_table

_SERVICES = ["web", "cart", "orders", "payments", "users", "search", "catalog", "shipping"]
_ROUTES = ["list", "get", "create", "update", "delete", "search", "health"]


def _spans(rows: int, seed: int = 7) -> dict[str, list[Any]]:
    """`rows` sidecar-like spans (half SERVER, half CLIENT), as Python column lists."""
    rng = random.Random(seed)
    cols: dict[str, list[Any]] = {}
    names = (
        "Timestamp TraceId SpanId ParentSpanId TraceState SpanName SpanKind ServiceName "
        "ResourceAttributes ScopeName ScopeVersion SpanAttributes Duration StatusCode "
        "StatusMessage Events.Timestamp Events.Name Events.Attributes Links.TraceId "
        "Links.SpanId Links.TraceState Links.Attributes"
    ).split()
    for name in names:
        cols[name] = []
    start = 1_764_000_000 * 10**9
    for i in range(rows):
        client = i % 2 == 1
        service = _SERVICES[i // 2 % len(_SERVICES)]
        upstream = _SERVICES[(i // 2 + 1) % len(_SERVICES)]
        route = _ROUTES[rng.randrange(len(_ROUTES))]
        status = 503 if rng.random() < 0.02 else 200
        ts = start + i * 50_000 + rng.randrange(1000)
        attrs = {
            "http.request.method": "GET",
            "url.path": f"/{route}/{rng.randrange(10_000)}",
            "http.response.status_code": str(status),
            "server.address": f"{upstream}.default.svc",
            "server.port": "8080",
            "meshlens.route": route,
            "network.peer.address": f"10.0.{rng.randrange(4)}.{rng.randrange(250)}",
        }
        if client:
            attrs["meshlens.upstream"] = upstream
            attrs["meshlens.attempt"] = "1"
        values: tuple[Any, ...] = (
            ts,
            f"{rng.getrandbits(128):032x}",
            f"{rng.getrandbits(64):016x}",
            f"{rng.getrandbits(64):016x}" if client else "",
            "",
            f"GET /{route}",
            "Client" if client else "Server",
            service,
            {
                "service.name": service,
                "service.instance.id": f"{service}-{i % 3}",
                "host.name": f"node-{i % 5}",
                "k8s.pod.name": f"{service}-7d9f-{i % 3}",
                "telemetry.sdk.name": "meshlens",
            },
            "meshlens.sidecar",
            "0.1.0",
            attrs,
            int(rng.lognormvariate(15, 1)),
            "Error" if status >= 500 else "Unset",
            "",
            [ts + 1000] if status >= 500 else [],
            ["retry"] if status >= 500 else [],
            [{"meshlens.reason": "5xx"}] if status >= 500 else [],
            [],
            [],
            [],
            [],
        )
        for name, value in zip(names, values, strict=True):
            cols[name].append(value)
    return cols


def _slices(cols: dict[str, list[Any]], batch: int) -> list[dict[str, list[Any]]]:
    rows = len(cols["Timestamp"])
    return [{k: v[i : i + batch] for k, v in cols.items()} for i in range(0, rows, batch)]


class _Raw:
    """The baseline: prebuilt Arrow IPC payloads sent straight to a chdb session."""

    def __init__(self, path: str, tables: list[pa.Table]) -> None:
        from chdb.session import Session

        # A second session on the same path shares the engine.
        self._session = Session(path)  # type: ignore[no-untyped-call]
        self._names = ", ".join(f"`{n}`" for n in tables[0].column_names)
        self.payloads: list[bytes] = []
        for table in tables:
            sink = io.BytesIO()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            self.payloads.append(sink.getvalue())

    def insert(self, database: str, index: int) -> float:
        began = time.perf_counter()
        statement = f"INSERT INTO `{database}`.otel_traces ({self._names})"
        with self._session.send_insert(statement, "ArrowStream") as ins:
            ins.append(self.payloads[index])
            ins.finish()
        return time.perf_counter() - began


async def _timed(store: Store, batch: dict[str, Any], token: str) -> float:
    began = time.perf_counter()
    await store.insert("otel_traces", batch, dedup_token=token)
    return time.perf_counter() - began


async def _bytes_per_span(store: Store, database: str) -> tuple[float, int]:
    await store.command(f"OPTIMIZE TABLE `{database}`.otel_traces FINAL")
    rows = await store.query(
        "SELECT sum(bytes_on_disk) AS b, sum(rows) AS r FROM system.parts"
        " WHERE database = {db:String} AND table = 'otel_traces' AND active",
        {"db": database},
    )
    return rows[0]["b"] / max(rows[0]["r"], 1), int(rows[0]["r"])


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--data", help="engine directory (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        path = str(Path(args.data or scratch) / "ch")
        stores = {db: open_store(f"chdb://{path}", database=db) for db in ("py", "arrow", "raw")}
        try:
            for store in stores.values():
                await store.migrate()
            cols = _spans(args.rows)
            batches = _slices(cols, args.batch)
            types = {r["name"]: r["type"] for r in await stores["py"].query(
                "SELECT name, type FROM system.columns WHERE database = 'py'"
                " AND table = 'otel_traces' AND default_kind = ''")}  # fmt: skip
            tables = [to_arrow_table("otel_traces", b, types) for b in batches]
            arrow_batches = [dict(zip(t.column_names, t.columns, strict=True)) for t in tables]
            await stores["raw"].command("CREATE DATABASE IF NOT EXISTS noviews")
            await stores["raw"].command("CREATE TABLE noviews.otel_traces AS raw.otel_traces")
            raw = _Raw(path, tables)
            py_s = arrow_s = raw_s = bare_s = 0.0
            # Interleaved, so every path meets the same background merges.
            for i, (batch, arrow_batch) in enumerate(zip(batches, arrow_batches, strict=True)):
                py_s += await _timed(stores["py"], batch, f"py-{i}")
                arrow_s += await _timed(stores["arrow"], arrow_batch, f"arrow-{i}")
                raw_s += await asyncio.to_thread(raw.insert, "raw", i)
                bare_s += await asyncio.to_thread(raw.insert, "noviews", i)
            per_span, stored = await _bytes_per_span(stores["py"], "py")
        finally:
            for store in stores.values():
                await store.close()
    n = args.rows
    print(f"otel_traces insert, {n} spans in batches of {args.batch}, chdb, 3 views attached")
    print(f"{'path':34} {'seconds':>8} {'rows/s':>10} {'vs raw':>7}")
    for label, secs in (
        ("store.insert, Python columns", py_s),
        ("store.insert, Arrow arrays", arrow_s),
        ("raw Arrow insert (baseline)", raw_s),
        ("raw Arrow insert, no views", bare_s),
    ):
        print(f"{label:34} {secs:8.2f} {n / secs:10.0f} {raw_s / secs:7.2f}")
    print(f"bytes on disk per span after OPTIMIZE FINAL: {per_span:.1f} ({stored} spans)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
