"""Service-map query latency: a 1-hour map over 10 M spans from the per-minute aggregates.

10 M CLIENT spans (60 services, ~300 edges, 20 routes, 1 % errors) spread over one hour are
generated inside the engine (`INSERT ... SELECT FROM numbers()`) into otel_traces, so they pass
through the meshlens_edges_1m view exactly as collector inserts do. Then the map query
(analytics.callgraph.service_map) is timed, next to the same map computed by a GROUP BY over
the raw spans (the baseline without aggregates). Usage: bench/servicemap_query.py [--spans N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.callgraph import TimeWindow, service_map
from collector.store import open_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)

_FILL = """
INSERT INTO otel_traces (Timestamp, TraceId, SpanId, SpanName, SpanKind, ServiceName,
                         SpanAttributes, Duration, StatusCode)
SELECT toDateTime64({t0:UInt32}, 9)
         + toIntervalNanosecond(intDiv(number * 3600000000000, {n:UInt64}) + number % 1000),
       lower(hex(cityHash64(number))) AS trace, lower(hex(cityHash64(number, 1))) AS span,
       'GET', 'Client', concat('svc-', toString(number % 60)),
       map('meshlens.upstream',
           concat('svc-', toString((number % 60 + 1 + intDiv(number, 60) % 5) % 60)),
           'meshlens.route', concat('r', toString(cityHash64(number, 3) % 20)),
           'http.response.status_code', if(number % 100 = 0, '503', '200')),
       toUInt64(1000000 + (cityHash64(number, 2) % 50000000)),
       if(number % 100 = 0, 'Error', 'Unset')
FROM numbers({n:UInt64})
"""

_RAW = """
SELECT ServiceName AS caller, SpanAttributes['meshlens.upstream'] AS callee,
       SpanAttributes['meshlens.route'] AS route, count() AS requests,
       countIf(StatusCode = 'Error') AS errors, quantiles(0.5, 0.9, 0.99)(Duration) AS q
FROM otel_traces
WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
  AND SpanKind = 'Client'
GROUP BY caller, callee, route
"""


async def _main(spans: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"chdb://{tmp}/ch", timeout_s=3600.0)
        try:
            await store.migrate()
            started = time.perf_counter()
            await store.command(_FILL, {"t0": int(T0.timestamp()), "n": spans})
            await store.command("OPTIMIZE TABLE meshlens_edges_1m FINAL")
            print(
                f"inserted {spans:,} spans through the view in {time.perf_counter() - started:.1f}s"
            )
            window = TimeWindow(T0, T0 + timedelta(hours=1))
            agg, raw = [], []
            graph = None
            for _ in range(repeats):
                t = time.perf_counter()
                graph = await service_map(store, window, "aggregates")
                agg.append(time.perf_counter() - t)
                t = time.perf_counter()
                rows = await store.query(_RAW, {"start": window.start, "end": window.end})
                raw.append(time.perf_counter() - t)
            assert graph is not None
            requests = sum(e.stats.requests for e in graph.edges)
            print(
                f"map: {len(graph.nodes)} nodes, {len(graph.edges)} edges, "
                f"{sum(len(e.routes) for e in graph.edges)} edge routes, {requests:,} requests "
                f"(raw query: {len(rows)} rows)"
            )
            a, r = statistics.median(agg), statistics.median(raw)
            print(
                f"1-hour map from meshlens_edges_1m (median of {repeats}): {a * 1000:.0f} ms"
                f"   target < 500 ms"
            )
            print(
                f"same map from raw otel_traces spans (baseline):   {r * 1000:.0f} ms"
                f"   ratio {r / a:.1f}x"
            )
        finally:
            await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(_main(args.spans, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
