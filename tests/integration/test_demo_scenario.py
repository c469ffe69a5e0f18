"""End to end: `meshlens demo --scenario` runs the shop as real processes on loopback with one
fault; afterwards the store holds every service's spans, connected traces and every demo edge."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from collector.schema.queries import EDGES_OVER_WINDOW
from collector.store import open_store
from demo.topology import SHOP

REPO = Path(__file__).resolve().parents[2]


async def test_short_crash_scenario_fills_the_store_with_the_whole_service_map(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    truth_path = tmp_path / "truth.json"
    argv = [
        sys.executable, "-m", "meshlens_cli", "demo",
        "--scenario", "crash-failover", "--seed", "7", "--duration", "14",
        "--rate", "10", "--data", str(data), "--ground-truth", str(truth_path),
        "--http-port", "0",
    ]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAULT  crash" in result.stdout and "CLEARED crash on catalog-2" in result.stdout
    assert "journeys/s" in result.stdout
    assert "control plane at http://127.0.0.1:" in result.stdout  # sidecars watch policies there

    truth = json.loads(truth_path.read_text())
    assert truth["scenario"] == "shop/crash/catalog/catalog-2" and truth["seed"] == 7
    [fault] = truth["faults"]
    assert fault["kind"] == "crash" and fault["instances"] == ["catalog-2"]
    assert truth["load_started_ns"] < fault["start_ns"] < fault["end_ns"] < truth["ended_ns"]
    assert sorted(map(tuple, truth["edges"])) == sorted(SHOP.edges())
    assert truth["policies_via"] == "control-plane"
    journeys = truth["journeys"]
    assert sum(j["total"] for j in journeys.values()) > 50

    store = open_store(f"chdb://{data / 'clickhouse'}")
    try:
        rows = await store.query(
            "SELECT ServiceName AS service, groupUniqArray(ScopeName) AS scopes "
            "FROM otel_traces GROUP BY service"
        )
        scopes = {r["service"]: set(r["scopes"]) for r in rows}
        # Every service reports from its app (OTel SDK) and from its sidecar.
        assert scopes == {s.name: {"meshlens.demo", "meshlens.sidecar"} for s in SHOP.services}

        [connected] = await store.query(
            "SELECT countIf(n >= 4) AS wide, max(n) AS widest FROM "
            "(SELECT TraceId, uniqExact(ServiceName) AS n FROM otel_traces GROUP BY TraceId)"
        )
        assert connected["wide"] >= 10 and connected["widest"] == 6  # checkout journeys

        start = dt.datetime.fromtimestamp(truth["started_ns"] // 10**9 - 60, dt.UTC)
        end = dt.datetime.fromtimestamp(truth["ended_ns"] // 10**9 + 120, dt.UTC)
        edges = await store.query(
            EDGES_OVER_WINDOW,
            {"start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)},
        )
        assert {(e["caller"], e["callee"]) for e in edges} == set(SHOP.edges())
    finally:
        await store.close()
