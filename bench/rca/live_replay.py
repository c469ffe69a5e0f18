"""Offline replay of recorded live runs: the real analysis engine over each run's own store.

    python bench/rca/live_replay.py DIR [--jobs 2] [--cases NAME ...]

DIR holds live_detect.py recordings (DIR/<case>/clickhouse, truth.json, demo/logs/up.log). Each
case's ClickHouse directory is copied to a temporary directory (the recording is never opened,
let alone written: the engine writes meshlens_incidents) and `AnalysisEngine` runs over the copy
with an injected clock that steps exactly as production does: the first round at the time the
live engine started (the first line of up.log), then every `AnalysisEngine._delay()` (the fine
path every 5 s, 3 s after each bucket ends; the minute path when 60 s have passed), until the
run ended. The engine's own "anomaly found" and "incident opened" log records are captured with
the simulated clock as their time and evaluated by live_detect.py's `evaluate_run` (the same
matching rule). Root causes are ranked over spans up to the simulated clock.

Differences from live, by construction: a round takes no time (live it took 0.1-1 s on a loaded
machine, which the live detection times include), and spans that landed late live are all
there in the replay (live, the fine path's 3 s settle mostly covers them).

One case per child process (chdb opens one data directory per process), `--jobs` at a time.
The table puts each case's replay next to its live outcome (from up.log).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.rca.live_detect import (
    Found,
    Opened,
    Outcome,
    evaluate_run,
    found_anomalies,
    opened_incidents,
    report,
)

__all__ = ["replay_case"]

_ENGINE_LOGGER = "analytics.engine"


class _Capture(logging.Handler):
    """Keeps the engine's "anomaly found" / "incident opened" records at the simulated time."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__(logging.INFO)
        self._clock = clock
        self.found: list[Found] = []
        self.opened: list[Opened] = []

    def emit(self, record: logging.LogRecord) -> None:
        from datetime import datetime

        def seconds(iso: str) -> float:
            return datetime.fromisoformat(iso).timestamp()

        extra: dict[str, Any] = record.__dict__
        msg = record.getMessage()
        if msg == "anomaly found":
            self.found.append(
                Found(self._clock[0], seconds(extra["start"]), extra["subject"], extra["signal"])
            )
        elif msg == "incident opened":
            self.opened.append(
                Opened(
                    self._clock[0],
                    seconds(extra["start"]),
                    tuple(extra["services"]),
                    tuple(extra["root_causes"]),
                    tuple((a["subject"], seconds(a["start"])) for a in extra.get("anomalies", ())),
                )
            )


def _first_log_time(log: Path) -> float:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            ts: str = json.loads(line)["ts"]
            from datetime import datetime

            return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    raise ValueError(f"{log}: no JSON log line")


async def replay_case(run_dir: Path) -> tuple[list[Found], list[Opened], int]:
    """Replay one recorded run; returns the captured events and the number of engine rounds."""
    from analytics.engine import AnalysisEngine
    from collector.store import open_store

    truth = json.loads((run_dir / "truth.json").read_text())
    start = _first_log_time(run_dir / "demo" / "logs" / "up.log")
    end = int(truth["ended_ns"]) / 1e9
    with tempfile.TemporaryDirectory(prefix="meshlens-replay-") as tmp:
        data = Path(tmp) / "clickhouse"
        shutil.copytree(run_dir / "clickhouse", data, symlinks=True)
        store = open_store(f"chdb://{data}")
        clock = [start]
        capture = _Capture(clock)
        engine_logger = logging.getLogger(_ENGINE_LOGGER)
        engine_logger.addHandler(capture)
        engine_logger.setLevel(logging.INFO)
        engine = AnalysisEngine(store, wall_clock=lambda: clock[0])
        rounds = 0
        try:
            await engine._prepare()
            while clock[0] <= end and rounds < 10_000:
                await engine.run_once()
                rounds += 1
                clock[0] += engine._delay()
        finally:
            engine_logger.removeHandler(capture)
            await store.close()
    return capture.found, capture.opened, rounds


def _child(run_dir: Path) -> int:
    started = time.monotonic()
    found, opened, rounds = asyncio.run(replay_case(run_dir))
    print(
        json.dumps(
            {
                "found": [asdict(f) for f in found],
                "opened": [asdict(o) for o in opened],
                "rounds": rounds,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    return 0


def _run_child(run_dir: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{run_dir.name}: replay failed\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _outcomes(run_dir: Path, result: dict[str, Any]) -> tuple[Outcome, Outcome, dict[str, Any]]:
    truth = json.loads((run_dir / "truth.json").read_text())
    lines = (run_dir / "demo" / "logs" / "up.log").read_text(errors="replace").splitlines()
    live = evaluate_run(run_dir.name, truth, opened_incidents(lines), found_anomalies(lines))
    found = [Found(**{**f}) for f in result["found"]]
    opened = [
        Opened(
            o["at_s"],
            o["start_s"],
            tuple(o["services"]),
            tuple(o["root_causes"]),
            tuple((subject, at) for subject, at in o.get("anomalies", ())),
        )
        for o in result["opened"]
    ]
    replayed = evaluate_run(run_dir.name, truth, opened, found)
    return live, replayed, result


def _side_by_side(pairs: Sequence[tuple[Outcome, Outcome, dict[str, Any]]]) -> str:
    def cell(o: Outcome) -> str:
        if o.kind == "nofault":
            return f"  free        false={o.false_incidents}"
        t = f"{o.detect_s:5.1f}s" if o.detect_s is not None else "  miss"
        return f"{t} top1={'y' if o.top1 else 'n'} false={o.false_incidents}"

    rows = [f"  {'case':<34} {'live':<22} {'replay':<22} rounds  time"]
    for live, replayed, result in pairs:
        rows.append(
            f"  {live.name:<34} {cell(live):<22} {cell(replayed):<22}"
            f" {result['rounds']:>6} {result['seconds']:>5.0f}s"
        )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=None, help="case names (default: all)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.dir)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    runs = [
        d
        for d in sorted(args.dir.iterdir())
        if (d / "truth.json").is_file()
        and (d / "clickhouse").is_dir()
        and (d / "demo" / "logs" / "up.log").is_file()
        and (args.cases is None or d.name in args.cases)
    ]
    if not runs:
        parser.error(f"no recorded runs in {args.dir}")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(_run_child, runs))
    pairs = [_outcomes(d, r) for d, r in zip(runs, results, strict=True)]
    print("LIVE (as recorded, up.log)")
    print(report([p[0] for p in pairs]))
    print("\nREPLAY (this checkout's engine over the recorded stores)")
    print(report([p[1] for p in pairs]))
    print("\nPER CASE: time to detect, top-1 at detection, false incidents")
    print(_side_by_side(pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
