"""Live time to detect: the real demo mesh, `meshlens up` with its real analysis engine, real time.

    python bench/rca/live_detect.py DIR [--duration 300] [--cases 12] [--nofault 1] [--seed N]
    python bench/rca/live_detect.py DIR --cases 8 --nofault 1 --seed 2 --holdout
    python bench/rca/live_detect.py DIR --report        # evaluate what DIR holds, record nothing

Each case is `meshlens demo --scenario NAME --seed N --duration D` (bench/rca/record.py's command),
recorded into DIR/<case>. `--holdout` records a held-out set: cases whose (topology, kind, target
service) is none of the 26 fault recordings the live rules were designed on (DESIGNED_ON), see
`holdout_cases`. The analysis engine inside `meshlens up` runs as in production (its
defaults: the minute path every 60 s and the fine path every 5 s, 3 s after each bucket ends)
and logs "anomaly found" (wall clock, subject, signal, start) the first time it sees an anomaly
and "incident opened" (id, start, services, top root causes) the first time it stores an
incident; this bench reads those lines from DIR/<case>/demo/logs/up.log and the fault's start
and end from DIR/<case>/truth.json. Cases are interleaved over fault kinds and topologies
(any prefix covers every kind); `--nofault K` adds K fault-free runs per topology.

The fault starts after 30-40 % of the run (the scenario's rule), so the run must be long enough
for the fine path's baseline (60 s of 5 s buckets): D = 300 s puts the fault at 90-120 s.

Matching rule: an anomaly matches a fault when it names the faulty service or one of its direct
callers and starts within [fault start - 10 s, fault end + 60 s]; an incident matches when one
of the anomalies it was opened with matches (an incident logged without its anomalies, by older
engines: when it names such a service and its start is in that window). Per anomaly, not by the
incident's earliest start: a minute-path anomaly (a burn rate) starts at its minute's first
second, up to 60 s before the fault inside that minute, and would move the start of the fault's
own incident out of the window when both are first seen in the same round. Time to detect = the
log time of the first matching incident or matching anomaly, whichever came first, minus the
fault's start (an anomaly can join an incident opened earlier; a tail-only `latency_p99` one
counts only through an incident: the engine pages on it only then). Every incident that
matches no fault is a false one. Top-1 at detection = the first root cause of the first
matching incident when it was opened is the faulty service (ranked over the detected
incident's window, not the truth's).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.rca.record import _interleaved, record_case, record_nofault
from demo.scenarios import Scenario, evaluation_cases

__all__ = [
    "DESIGNED_ON",
    "Found",
    "Opened",
    "Outcome",
    "evaluate_run",
    "found_anomalies",
    "holdout_cases",
    "opened_incidents",
]

MATCH_BEFORE_S = 10.0
MATCH_AFTER_S = 60.0

# (topology, fault kind, target service) of the 26 recorded live fault runs the live rules were
# designed on (/work/rca-live: 14, /work/rca-live2: 12; all seed 1).
DESIGNED_ON: frozenset[tuple[str, str, str]] = frozenset(
    {(topology, kind, "catalog") for topology in ("shop",) for kind in (
        "latency", "error_burst", "abort", "crash", "cpu", "reset")}
    | {("chain", kind, "auth") for kind in (
        "latency", "error_burst", "abort", "crash", "cpu", "reset")}
    | {("shop", "latency", "cart"), ("shop", "error_burst", "cart")}
)  # fmt: skip


def holdout_cases(
    seed: int,
    count: int,
    duration_s: float,
    designed_on: frozenset[tuple[str, str, str]] = DESIGNED_ON,
) -> list[Scenario]:
    """`count` cases of `evaluation_cases(seeds=[seed])` whose (topology, kind, target) is not in
    `designed_on`, the target drawn at random (seeded) per (topology, kind). In order, kind by
    kind, the topology alternating and swapping each round: any 6 cover every kind, any 2 both
    topologies. A (topology, kind) with no unseen target takes a seen one (at this seed, so a
    different seed than the recordings' when seed != 1)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    cases = evaluation_cases(seeds=[seed], duration_s=duration_s)
    rng = random.Random(f"holdout#{seed}")
    topologies = sorted({c.topology for c in cases}, reverse=True)  # shop, chain
    kinds = list(dict.fromkeys(str(c.kind) for c in cases))
    queues: dict[tuple[str, str], list[Scenario]] = {}
    for topology in topologies:
        for kind in kinds:
            group = [c for c in cases if (c.topology, str(c.kind)) == (topology, kind)]
            rng.shuffle(group)
            unseen = [c for c in group if (topology, kind, c.service) not in designed_on]
            queues[(topology, kind)] = unseen + [c for c in group if c not in unseen]
    out: list[Scenario] = []
    round_ = 0
    while count and any(queues.values()):
        for i, kind in enumerate(kinds):
            topology = topologies[(i + round_) % len(topologies)]
            for t in (topology, *(t for t in topologies if t != topology)):
                if queues[(t, kind)]:
                    out.append(queues[(t, kind)].pop(0))
                    break
            if len(out) == count:
                return out
        round_ += 1
    return out


@dataclass(frozen=True, slots=True)
class Opened:
    """One "incident opened" log line: when (wall clock, s), the incident's start (s), names,
    and its anomalies' (subject, start in s) when the engine logged them."""

    at_s: float
    start_s: float
    services: tuple[str, ...]
    root_causes: tuple[str, ...]
    anomalies: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Found:
    """One "anomaly found" log line: when (wall clock, s), the anomaly's start (s), subject."""

    at_s: float
    start_s: float
    subject: str
    signal: str

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.subject.split("->"))


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    kind: str
    detect_s: float | None  # None: missed
    top1: bool
    false_incidents: int
    fault_free_s: float


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def opened_incidents(log_lines: Sequence[str]) -> list[Opened]:
    """The engine's "incident opened" lines of a JSON log (other lines are skipped)."""
    out = []
    for line in log_lines:
        if '"incident opened"' not in line:
            continue
        record = json.loads(line)
        out.append(
            Opened(
                _seconds(record["ts"]),
                _seconds(record["start"]),
                tuple(record["services"]),
                tuple(record["root_causes"]),
                tuple((a["subject"], _seconds(a["start"])) for a in record.get("anomalies", ())),
            )
        )
    return out


def found_anomalies(log_lines: Sequence[str]) -> list[Found]:
    """The engine's "anomaly found" lines of a JSON log."""
    out = []
    for line in log_lines:
        if '"anomaly found"' not in line:
            continue
        record = json.loads(line)
        out.append(
            Found(
                _seconds(record["ts"]),
                _seconds(record["start"]),
                record["subject"],
                record["signal"],
            )
        )
    return out


def evaluate_run(
    name: str, truth: dict[str, object], opened: Sequence[Opened], found: Sequence[Found]
) -> Outcome:
    """One run's time to detect, top-1 at detection and false incidents (see the module doc)."""
    faults = truth["faults"]
    assert isinstance(faults, list)
    edges = truth["edges"]
    assert isinstance(edges, list)
    load_s = int(truth["load_started_ns"]) / 1e9  # type: ignore[call-overload]
    end_s = int(truth["ended_ns"]) / 1e9  # type: ignore[call-overload]
    matched: set[int] = set()
    detect_s: float | None = None
    top1 = False
    kind = "nofault"
    fault_s = 0.0
    for fault in faults:
        kind = str(fault["kind"])
        target = str(fault["service"])
        start, stop = fault["start_ns"] / 1e9, fault["end_ns"] / 1e9
        fault_s += stop - start
        scope = {target} | {a for a, b in edges if b == target}

        def near(start_s: float, services: Sequence[str]) -> bool:
            in_time = start - MATCH_BEFORE_S <= start_s <= stop + MATCH_AFTER_S  # noqa: B023
            return in_time and bool(scope & set(services))  # noqa: B023

        # A tail-only rise pages only through an incident (it opens none while short).
        times = [
            f.at_s - start
            for f in found
            if f.signal != "latency_p99" and near(f.start_s, f.services)
        ]
        for i, inc in enumerate(sorted(opened, key=lambda o: o.at_s)):
            if inc.anomalies:
                hit = any(near(at, tuple(subject.split("->"))) for subject, at in inc.anomalies)
            else:
                hit = near(inc.start_s, inc.services)
            if hit:
                times.append(inc.at_s - start)
                if not matched and inc.root_causes:
                    top1 = inc.root_causes[0] == target
                matched.add(i)
        if times and detect_s is None:
            detect_s = min(times)
    return Outcome(
        name,
        kind,
        detect_s,
        top1,
        len(opened) - len(matched),
        max(end_s - load_s - fault_s, 0.0),
    )


def _evaluate_dir(run_dir: Path) -> Outcome | None:
    truth_path, log = run_dir / "truth.json", run_dir / "demo" / "logs" / "up.log"
    if not truth_path.is_file() or not log.is_file():
        return None
    truth = json.loads(truth_path.read_text())
    lines = log.read_text(errors="replace").splitlines()
    return evaluate_run(run_dir.name, truth, opened_incidents(lines), found_anomalies(lines))


def _verdict(o: Outcome) -> str:
    if o.kind == "nofault":
        return "fault-free                      "
    found = f"detected {o.detect_s:6.1f}s" if o.detect_s is not None else "missed         "
    return f"{found}  top1@detect={'yes' if o.top1 else 'no'}"


def report(outcomes: Sequence[Outcome]) -> str:
    rows = [
        f"{'fault kind':<12} {'runs':>4} {'detected':>9} {'median':>7} {'max':>7}"
        f" {'<=30s':>6} {'top-1@detect':>12}"
    ]
    kinds = sorted({o.kind for o in outcomes if o.kind != "nofault"})
    for kind in [*kinds, "ALL"]:
        group = [o for o in outcomes if o.kind != "nofault" and kind in (o.kind, "ALL")]
        if not group:
            continue
        times = [o.detect_s for o in group if o.detect_s is not None]
        fast = sum(t <= 30 for t in times)
        median = f"{statistics.median(times):6.1f}s" if times else f"{'-':>7}"
        worst = f"{max(times):6.1f}s" if times else f"{'-':>7}"
        rows.append(
            f"{kind:<12} {len(group):>4} {len(times) / len(group):>8.0%} {median} {worst}"
            f" {fast:>3}/{len(group):<2}"
            f" {sum(o.top1 for o in group):>8}/{len(group)}"
        )
    false = sum(o.false_incidents for o in outcomes)
    free = sum(o.fault_free_s for o in outcomes)
    true = sum(o.detect_s is not None for o in outcomes)
    rows.append(
        f"false incidents: {false} in {free:.0f} s of fault-free load ({len(outcomes)} runs);"
        f" precision {true / max(true + false, 1):.1%} (first matching incident per fault"
        f" / those + false ones)"
    )
    rows += [f"  {o.name:<34} {_verdict(o)}  false={o.false_incidents}" for o in outcomes]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--cases", type=int, default=12, help="fault cases to record")
    parser.add_argument("--nofault", type=int, default=0, help="fault-free runs per topology")
    parser.add_argument("--seed", type=int, default=1, help="the scenarios' seed")
    parser.add_argument(
        "--holdout",
        action="store_true",
        help="only cases whose (topology, kind, target) the live rules were not designed on",
    )
    parser.add_argument("--report", action="store_true", help="evaluate only, record nothing")
    args = parser.parse_args(argv)
    if args.cases < 0 or args.nofault < 0:
        parser.error("--cases and --nofault must be >= 0")
    args.dir.mkdir(parents=True, exist_ok=True)
    if not args.report:
        if args.holdout:
            cases = holdout_cases(args.seed, args.cases, args.duration)
        else:
            cases = _interleaved(evaluation_cases(seeds=[args.seed], duration_s=args.duration))
        for n, case in enumerate(cases[: args.cases], 1):
            started = time.monotonic()
            code = record_case(args.dir, case)
            print(
                f"[{n}] {case.name}: exit {code} ({time.monotonic() - started:.0f} s)", flush=True
            )
        for i in range(args.nofault):
            for topology in ("shop", "chain"):
                seed = 100 * args.seed + i  # seed 1: 100, 101, ... as before
                code = record_nofault(args.dir, topology, i, args.duration, seed=seed)
                print(f"{topology} nofault {i}: exit {code}", flush=True)
    outcomes = [o for d in sorted(args.dir.iterdir()) if (o := _evaluate_dir(d)) is not None]
    print(report(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
