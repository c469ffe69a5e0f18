"""CPU cost of one live fine-path run (`analytics.engine.detect_fine`) next to the minute path's
detection (`analytics.engine.detect`) on the same synthetic mesh, measured in the same run.

    python bench/rca/fine_cost.py [--edges 12] [--repeat 5]

The mesh: a chain of `--edges` edges, steady traffic with jitter. The fine path sees what it
queries every 5 s: the 2 minutes it evaluates plus 10 minutes of baseline in 5 s buckets; the
minute path sees what it queries every 60 s: 6 h of minute points (burn rates look 6 h back),
evaluating the last 15 minutes. The fine path also judges every service's replicas (two each,
`detect_stopped_instances`). Printed: the median seconds per run and the share of one core
each path takes at its own interval.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analytics.anomalies import Point, detect_stopped_instances
from analytics.callgraph import EdgePoint, TimeWindow
from analytics.callgraph.service import Stats
from analytics.engine import FINE_DETECTOR, FINE_EVALUATE, LIVE_DETECTOR, detect, detect_fine

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _mesh(edges: int, steps: int, step: timedelta, seed: int = 1) -> list[EdgePoint]:
    rnd = random.Random(seed)
    out = []
    for k in range(steps):
        for i in range(edges):
            p50, p99 = 10 + rnd.random(), 30 + 5 * rnd.random()
            stats = Stats(60, 0, 12.0, 0.0, 11.0, p50, 20.0, p99)
            out.append(EdgePoint(T0 + k * step, f"s{i}", f"s{i + 1}", stats))
    return out


def _replicas(services: int, steps: int, step: timedelta) -> dict[str, dict[str, list[Point]]]:
    return {
        f"s{i + 1}": {
            f"s{i + 1}-{r}": [Point(T0 + k * step, 30, 0, 0.0) for k in range(steps)]
            for r in (1, 2)
        }
        for i in range(services)
    }


def _median_s(run: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    step = FINE_DETECTOR.step
    fine_history = FINE_EVALUATE + timedelta(minutes=FINE_DETECTOR.baseline_minutes)
    fine = _mesh(args.edges, int(fine_history / step), step)
    fine_end = T0 + fine_history
    minute = _mesh(args.edges, 360, timedelta(minutes=1))
    window = TimeWindow(T0 + timedelta(minutes=345), T0 + timedelta(minutes=360))
    replicas = _replicas(args.edges, int(fine_history / step), step)

    def fine_run() -> None:
        evaluate_from = fine_end - FINE_EVALUATE
        detect_fine(fine, evaluate_from, FINE_DETECTOR)
        for service, by_instance in replicas.items():
            detect_stopped_instances(service, by_instance, evaluate_from, FINE_DETECTOR)

    fine_s = _median_s(fine_run, args.repeat)
    minute_s = _median_s(lambda: detect(minute, window, LIVE_DETECTOR), args.repeat)
    print(f"mesh: {args.edges} edges; median of {args.repeat} runs")
    print(
        f"fine path   {fine_s:7.3f} s a run, every {FINE_DETECTOR.step_s} s:"
        f" {fine_s / FINE_DETECTOR.step_s:6.1%} of a core"
    )
    print(
        f"minute path {minute_s:7.3f} s a run, every 60 s: {minute_s / 60:6.1%} of a core"
        " (baseline)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
