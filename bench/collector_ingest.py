"""Collector ingest benchmark: OTLP/HTTP protobuf -> spool -> batches -> embedded store.

Prints, side by side from the same run and the same engine:
  * spans/s through the collector (senders in a separate process, several connections,
    512-span requests of realistic spans) vs a raw columnar insert of the same rows;
  * collector spans per CPU-second of its process (the "per core" figure);
  * bytes on disk per span in otel_traces after the ingest (merged);
  * p50/p99 time from a request's 200 OK until its rows are queryable.

Run: .venv/bin/python bench/collector_ingest.py [--requests 200] [--senders 4]
Goals: >= 30k spans/s per core, >= 0.25x raw, <= 60 B/span, queryable within 3 s p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: E402
from opentelemetry.proto.common.v1 import common_pb2  # noqa: E402

SPANS_PER_REQUEST = 512
_SERVICES = ["frontend", "checkout", "cart", "payment", "inventory", "shipping", "email", "ads"]
_ROUTES = ["/", "/cart", "/checkout", "/orders/{id}", "/items/{id}", "/pay", "/ship", "/ads"]


def _kv(key: str, value: str | int) -> common_pb2.KeyValue:
    if isinstance(value, int):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def make_request(rng: random.Random, start_ns: int) -> bytes:
    """512 spans of one service instance: traces of a server span with client children."""
    service = rng.choice(_SERVICES)
    request = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [
            _kv("service.name", service),
            _kv("service.version", "1.4.2"),
            _kv("host.name", f"node-{rng.randrange(4)}"),
            _kv("k8s.pod.name", f"{service}-7d9f8b-{rng.randrange(3)}"),
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.name", "opentelemetry"),
        ]
    )
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "meshlens.sidecar"
    scope.scope.version = "0.1.0"
    made = 0
    while made < SPANS_PER_REQUEST:
        trace_id = rng.randbytes(16)
        root_id = rng.randbytes(8)
        route = rng.choice(_ROUTES)
        begin = start_ns + rng.randrange(1_000_000_000)
        total = int(rng.lognormvariate(16, 1))  # ~9 ms median
        status = 500 if rng.random() < 0.02 else 200
        _add_span(scope, trace_id, root_id, b"", f"GET {route}", 2, begin, total, status, service)
        made += 1
        for _ in range(min(rng.randrange(1, 4), SPANS_PER_REQUEST - made)):
            peer = rng.choice(_SERVICES)
            child = int(total * rng.uniform(0.1, 0.6))
            _add_span(
                scope, trace_id, rng.randbytes(8), root_id, f"GET /{peer}", 3,
                begin + rng.randrange(max(1, total - child)), child, status, peer,
            )  # fmt: skip
            made += 1
    return bytes(request.SerializeToString())


def _add_span(
    scope: Any, trace_id: bytes, span_id: bytes, parent: bytes, name: str, kind: int,
    start: int, duration: int, status: int, peer: str,
) -> None:  # fmt: skip
    span = scope.spans.add(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=kind
    )
    span.start_time_unix_nano = start
    span.end_time_unix_nano = start + duration
    span.attributes.extend(
        [
            _kv("http.request.method", "GET"),
            _kv("http.route", name.split(" ", 1)[1]),
            _kv("http.response.status_code", status),
            _kv("server.address", peer),
            _kv("url.scheme", "http"),
            _kv("network.peer.address", f"10.0.{kind}.{span_id[0]}"),
        ]
    )
    if status >= 500:
        span.status.code = 2


# ---- sender process --------------------------------------------------------------------------
def _read_requests(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from("<I", data, offset)
        out.append(data[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return out


async def _send_all(url: str, path: Path, senders: int) -> list[float]:
    import aiohttp

    requests = _read_requests(path)
    acks: list[float] = [0.0] * len(requests)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(requests)):
        queue.put_nowait(index)
    headers = {"Content-Type": "application/x-protobuf"}

    async def worker(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            for _ in range(50):
                async with http.post(url, data=requests[index], headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        acks[index] = time.time()
                        break
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(senders)))
    return acks


def sender_main(url: str, path: str, senders: int) -> None:
    acks = asyncio.run(_send_all(url, Path(path), senders))
    print(json.dumps(acks))


# ---- benchmark process -----------------------------------------------------------------------
async def _raw_baseline(store: Any, requests: list[bytes], batch_rows: int) -> float:
    """Seconds to insert the same rows straight from prepared columns (no decode, no spool)."""
    from collector.otlp.columns import Signal, merge_tables
    from collector.otlp.decode import decode_protobuf

    decoded = [decode_protobuf(Signal.TRACES, body).tables for body in requests]
    per_batch = max(1, batch_rows // SPANS_PER_REQUEST)
    batches = [
        merge_tables(decoded[i : i + per_batch])["otel_traces"]
        for i in range(0, len(decoded), per_batch)
    ]
    began = time.perf_counter()
    for number, columns in enumerate(batches):
        await store.insert("otel_traces", columns, dedup_token=f"raw-{number}")
    return time.perf_counter() - began


async def _truncate(store: Any) -> None:
    for table in (
        "otel_traces",
        "otel_traces_trace_id_ts",
        "meshlens_edges_1m",
        "meshlens_services_1m",
        "meshlens_trace_summaries",
        "meshlens_spans_by_time",
    ):
        try:
            await store.command(f"TRUNCATE TABLE IF EXISTS {table}")
        except Exception as exc:  # a table a later schema version dropped: not fatal for a bench
            print(f"(truncate {table}: {exc})", file=sys.stderr)


async def _count(store: Any) -> int:
    return int((await store.query("SELECT count() AS n FROM otel_traces"))[0]["n"])


async def run(args: argparse.Namespace) -> None:
    from collector.app import tune_gc
    from collector.pipeline import Pipeline, PipelineConfig
    from collector.processors.batch import BatchConfig
    from collector.receivers.otlp_http import OtlpHttpConfig
    from collector.store import open_store

    rng = random.Random(7)
    base = time.time_ns() - 3_600_000_000_000
    requests = [make_request(rng, base + i * 1_000_000) for i in range(args.requests)]
    total_spans = len(requests) * SPANS_PER_REQUEST
    work = Path(tempfile.mkdtemp(prefix="meshlens-bench-"))
    request_file = work / "requests.bin"
    request_file.write_bytes(b"".join(struct.pack("<I", len(r)) + r for r in requests))

    tune_gc()  # as `meshlens collector` / `meshlens up` do
    store = open_store(f"chdb://{work / 'ch'}")
    await store.migrate()
    raw_s = await _raw_baseline(store, requests, args.batch_rows)
    await _truncate(store)

    config = PipelineConfig(
        spool_dir=work / "spool",
        http=OtlpHttpConfig(port=0),
        grpc=None,
        batch=BatchConfig(max_rows=args.batch_rows, max_age_s=args.max_age_s),
    )
    pipeline = Pipeline(config, store)
    await pipeline.start()
    url = f"{pipeline.addresses()['otlp-http']}/v1/traces"
    cpu_before = _cpu_s()
    loop_cpu_before = time.thread_time()
    began = time.time()
    sender = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--sender", url, str(request_file), str(args.senders),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    seen: list[tuple[float, int]] = []
    while True:
        count = await _count(store)
        seen.append((time.time(), count))
        if count >= total_spans:
            break
        await asyncio.sleep(args.poll_s)
    ended = seen[-1][0]
    cpu_s = _cpu_s() - cpu_before
    loop_cpu_s = time.thread_time() - loop_cpu_before
    out, _ = await sender.communicate()
    acks = json.loads(out)
    await pipeline.shutdown()

    await store.command("OPTIMIZE TABLE otel_traces FINAL")
    parts = await store.query(
        "SELECT sum(bytes_on_disk) AS b, sum(rows) AS r FROM system.parts"
        " WHERE active AND database = currentDatabase() AND table = 'otel_traces'"
    )
    await store.close()

    latencies = _queryable_latencies(acks, seen)
    wall = ended - began
    rate = total_spans / wall
    raw_rate = total_spans / raw_s
    per_core = total_spans / cpu_s
    bytes_per_span = int(parts[0]["b"]) / max(1, int(parts[0]["r"]))
    print(f"spans: {total_spans} in {len(requests)} requests of {SPANS_PER_REQUEST}, "
          f"{args.senders} senders, batch {args.batch_rows} rows / {args.max_age_s}s")  # fmt: skip
    p50, p99 = _pct(latencies, 50), _pct(latencies, 99)
    print(f"collector ingest  : {rate:9.0f} spans/s (wall clock, HTTP -> queryable)")
    print(f"raw insert        : {raw_rate:9.0f} spans/s (same rows, same engine)")
    print(f"  ratio           : {rate / raw_rate:9.2f}x (goal >= 0.25x)")
    print(f"collector per core: {per_core:9.0f} spans per CPU-second of its process (goal >= 30k)")
    print(
        f"  CPU per span    : {cpu_s / total_spans * 1e6:9.1f} us, of which event loop (HTTP, "
        f"decode, spool) {loop_cpu_s / total_spans * 1e6:.1f} us, engine + other threads "
        f"{(cpu_s - loop_cpu_s) / total_spans * 1e6:.1f} us"
    )
    print(f"stored            : {bytes_per_span:9.1f} bytes/span in otel_traces (goal <= 60)")
    print(f"200 OK->queryable : p50 {p50:.3f}s  p99 {p99:.3f}s (goal p99 <= 3s)")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _queryable_latencies(acks: list[float], seen: list[tuple[float, int]]) -> list[float]:
    """Request k in ack order is taken as queryable once the row count covers k+1 requests
    (batches are written in spool order, which is the order requests were acknowledged)."""
    out = []
    for position, ack in enumerate(sorted(acks)):
        need = (position + 1) * SPANS_PER_REQUEST
        when = next(t for t, count in seen if count >= need)
        out.append(max(0.0, when - ack))
    return out


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--sender":
        sender_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--max-age-s", type=float, default=0.5)
    parser.add_argument("--poll-s", type=float, default=0.1, help="row-count poll interval")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(REPO))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
