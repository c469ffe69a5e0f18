"""Root-cause evaluation on our own fault corpus: runs recorded by the demo scenario runner.

Record cases first (each run writes spans to its store and labels to a ground-truth JSON):
    python bench/rca/demo_corpus.py --record DIR shop/latency/payment shop/abort/cart ...
(runs `meshlens demo --scenario S --data DIR/<S> --ground-truth DIR/<S>/truth.json`, about
50 s each; `meshlens demo --list-scenarios` lists them), then evaluate every fault of every run:
    python bench/rca/demo_corpus.py DIR/*      (each run directory holds clickhouse/, truth.json)
Baseline = spans from load start to the fault's start; window = the fault's span of time. The
rankers are the same as in trainticket.py (meshlens and the naive baselines).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analytics.rca.repository import load_spans
from bench.rca.trainticket import RANKERS
from collector.store import open_store


def _at(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


async def _evaluate(run_dir: Path, hits: dict[str, list[int]]) -> None:
    truth = json.loads((run_dir / "truth.json").read_text())
    store = open_store(f"chdb://{run_dir / 'clickhouse'}")
    try:
        for fault in truth["faults"]:
            baseline = await load_spans(
                store, _at(truth["load_started_ns"]), _at(fault["start_ns"])
            )
            window = await load_spans(store, _at(fault["start_ns"]), _at(fault["end_ns"]))
            line = [f"{run_dir.name} {fault['kind']:<12} {fault['service']:<16}"]
            for name, ranker in RANKERS.items():
                order = ranker(baseline, window)
                rank = order.index(fault["service"]) + 1 if fault["service"] in order else 0
                hits[name][0] += rank == 1
                hits[name][1] += 0 < rank <= 3
                line.append(f"{name}=#{rank or '-'}")
            hits["_cases"][0] += 1
            print("  ".join(line), flush=True)
    finally:
        await store.close()


def record(into: Path, scenarios: list[str]) -> int:
    """Run each demo scenario into its own data directory; returns the number that failed."""
    failed = 0
    for scenario in scenarios:
        run_dir = into / scenario.replace("/", "-")
        run_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "meshlens_cli",
            "--log-level",
            "WARNING",
            "demo",
            "--scenario",
            scenario,
            "--data",
            str(run_dir),
            "--ground-truth",
            str(run_dir / "truth.json"),
            "--http-port",
            "0",
        ]
        with (run_dir / "demo.log").open("w") as log:
            code = subprocess.run(command, stdout=log, stderr=log, timeout=600, check=False)
        print(f"{scenario}: exit {code.returncode}", flush=True)
        failed += code.returncode != 0
    return failed


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 0
    if argv[0] == "--record":
        return 1 if len(argv) < 3 else min(record(Path(argv[1]), argv[2:]), 1)
    hits: dict[str, list[int]] = {name: [0, 0] for name in RANKERS} | {"_cases": [0, 0]}
    for run_dir in argv:
        if (Path(run_dir) / "truth.json").is_file():  # skip logs and other files a glob catches
            asyncio.run(_evaluate(Path(run_dir), hits))
    n = max(hits.pop("_cases")[0], 1)
    for name, (top1, top3) in hits.items():
        print(f"{name:<12} top-1 {top1 / n:6.1%}  top-3 {top3 / n:6.1%}  ({n} faults)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
