"""Root-cause evaluation on our own fault corpus: runs recorded by the demo scenario runner.

Record (sequentially, ~30 s per case; 66 fault cases per seed + fault-free runs):
    python bench/rca/record.py /work/rca-corpus --seed 1 --duration 25 --nofault 1
then evaluate every run directory (each holds clickhouse/ and truth.json):
    python bench/rca/demo_corpus.py [--design-runs FILE] /work/rca-corpus
(`make bench` does this too when MESHLENS_RCA_CORPUS names the directory).

Detection, three variants of `analytics.engine.detect` (deviations, change points, burn rates,
new/vanished edges): "p99-only" (latency = p99; the engine before this evaluation), "+median"
(the median-latency signal on, `Point.p50_ms`) and "+median+2-run" (a deviation must last two
buckets; what the engine runs now, `analytics.engine.LIVE_DETECTOR`). All read the edge RED
series the engine reads (CLIENT spans with a callee, as `meshlens_edges_1m` aggregates them),
with 1 s buckets standing in for the live engine's minutes (the runs last 25 s; every detector
threshold counts buckets, so time is compressed 60x). The detection is re-run as the live engine
would, at every bucket boundary over the buckets complete by then (lookback 15
buckets). Every anomaly seen at any step is kept and grouped into incidents
(`group_incidents`). Matching rule: an incident is a true positive when its time span overlaps
[fault start - 1 bucket, fault end + 3 buckets] and its anomalies name the target or one of its
direct callers (from the topology); every other incident is a false positive (fault-free runs
and the time before a fault included). Time to detect = the first step at or after the fault's
start at which a matching anomaly exists, minus the fault's start (bucket completion included).

Ranking: baseline = spans from load start to the fault's start; window = the fault's span. The
rankers are those of trainticket.py (meshlens and the naive baselines), on the same spans.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analytics.anomalies import (
    Anomaly,
    DetectorConfig,
    Incident,
    group_incidents,
)
from analytics.callgraph import EdgePoint, TimeWindow
from analytics.callgraph.service import Stats
from analytics.engine import detect
from analytics.rca import SpanRow
from analytics.rca.repository import load_spans
from bench.rca.trainticket import RANKERS
from collector.store import open_store

__all__ = [
    "DETECTOR",
    "Fault",
    "Run",
    "bucket_points",
    "evaluate_runs",
    "load_run",
    "sliding_detection",
]

BUCKET_NS = 1_000_000_000
LOOKBACK_BUCKETS = 15
MATCH_BEFORE_BUCKETS = 1
MATCH_AFTER_BUCKETS = 3
# The engine's defaults except the baseline length: a 25 s run has ~8 s before its fault.
DETECTOR = DetectorConfig(min_baseline_points=5)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # bucket k is shown to the detectors as minute k


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    service: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    topology: str
    load_start_ns: int
    end_ns: int
    faults: tuple[Fault, ...]
    edges: tuple[tuple[str, str], ...]
    spans: Sequence[SpanRow] = field(repr=False)

    def callers(self, service: str) -> set[str]:
        return {a for a, b in self.edges if b == service}


async def load_run(run_dir: Path) -> Run:
    truth = json.loads((run_dir / "truth.json").read_text())
    store = open_store(f"chdb://{run_dir / 'clickhouse'}")
    try:
        spans = await load_spans(
            store, _at(truth["load_started_ns"]), _at(truth["ended_ns"] + BUCKET_NS)
        )
    finally:
        await store.close()
    return Run(
        run_dir.name,
        truth["topology"],
        truth["load_started_ns"],
        truth["ended_ns"],
        tuple(Fault(f["kind"], f["service"], f["start_ns"], f["end_ns"]) for f in truth["faults"]),
        tuple((a, b) for a, b in truth["edges"]),
        spans,
    )


def _at(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _quantile(sorted_values: Sequence[int], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1e6


def bucket_points(spans: Sequence[SpanRow], t0_ns: int, bucket_ns: int) -> list[EdgePoint]:
    """Edge RED per bucket from CLIENT spans with a callee (what meshlens_edges_1m aggregates);
    bucket k (from `t0_ns`) is dated minute k after a fixed epoch."""
    groups: dict[tuple[int, str, str], list[SpanRow]] = defaultdict(list)
    for s in spans:
        if s.peer and s.start_ns >= t0_ns:
            groups[((s.start_ns - t0_ns) // bucket_ns, s.service, s.peer)].append(s)
    out = []
    for (k, caller, callee), rows in sorted(groups.items()):
        durations = sorted(r.duration_ns for r in rows)
        errors = sum(r.error for r in rows)
        stats = Stats(
            requests=len(rows),
            errors=errors,
            rate_per_s=len(rows) / (bucket_ns / 1e9),
            error_ratio=errors / len(rows),
            mean_ms=statistics.fmean(durations) / 1e6,
            p50_ms=_quantile(durations, 0.5),
            p90_ms=_quantile(durations, 0.9),
            p99_ms=_quantile(durations, 0.99),
        )
        out.append(EdgePoint(_EPOCH + timedelta(minutes=k), caller, callee, stats))
    return out


def detect_p99_only(
    points: Sequence[EdgePoint], window: TimeWindow, cfg: DetectorConfig
) -> list[Anomaly]:
    """`analytics.engine.detect` with the median-latency signal off (edges carry no p50)."""
    blind = [replace(p, stats=replace(p.stats, p50_ms=None)) for p in points]
    return detect(blind, window, cfg)


Detector = Callable[[Sequence[EdgePoint], TimeWindow, DetectorConfig], list[Anomaly]]
# name -> (detect function, config): p99 alone, then each change on top of the last; the last
# is what analytics.engine runs (LIVE_DETECTOR) since this evaluation; "+graph" is the last with
# grouping by call-graph neighbourhood (the engine since the live replay).
DETECTORS: dict[str, tuple[Detector, DetectorConfig]] = {
    "p99-only": (detect_p99_only, DETECTOR),
    "+median": (detect, DETECTOR),
    "+median+2-run": (detect, replace(DETECTOR, min_run_points=2)),
    "+graph": (detect, replace(DETECTOR, min_run_points=2)),
}
# Variants that group anomalies by call-graph neighbourhood (the service map the spans show), as
# analytics.engine does since the live replay (bench/rca/live_replay.py); the others by time.
GROUPED_BY_CALLS = frozenset({"+graph"})


@dataclass(frozen=True, slots=True)
class Detection:
    incidents: tuple[Incident, ...]
    first_seen: dict[tuple[str, str, datetime], int]  # anomaly key -> step (bucket index)


def sliding_detection(
    spans: Sequence[SpanRow],
    t0_ns: int,
    end_ns: int,
    *,
    bucket_ns: int = BUCKET_NS,
    lookback: int = LOOKBACK_BUCKETS,
    detector: str = "p99-only",
) -> Detection:
    """Run `detector` at every bucket boundary over the buckets complete by then."""
    run_detector, cfg = DETECTORS[detector]
    points = bucket_points(spans, t0_ns, bucket_ns)
    steps = (end_ns - t0_ns) // bucket_ns
    seen: dict[tuple[str, str, datetime], Anomaly] = {}
    first: dict[tuple[str, str, datetime], int] = {}
    for k in range(1, steps + 1):
        now = _EPOCH + timedelta(minutes=k)
        done = [p for p in points if p.minute < now]
        window = TimeWindow(max(_EPOCH, now - timedelta(minutes=lookback)), now)
        for a in run_detector(done, window, cfg):
            key = (a.subject, a.signal, a.start)
            if key not in seen:
                seen[key] = a
                first[key] = k
    edges = {(p.caller, p.callee) for p in points} if detector in GROUPED_BY_CALLS else None
    return Detection(tuple(group_incidents(list(seen.values()), edges=edges)), first)


def _bucket(ns: int, t0_ns: int, bucket_ns: int = BUCKET_NS) -> int:
    return (ns - t0_ns) // bucket_ns


def _minute_index(at: datetime) -> int:
    return int((at - _EPOCH) / timedelta(minutes=1))


@dataclass(slots=True)
class FaultResult:
    run: str
    kind: str
    service: str
    detected_after_s: dict[str, float | None]  # per detector; None: missed
    ranks: dict[str, int]  # per ranker; 0: not ranked


@dataclass(slots=True)
class DetectionTotals:
    true_incidents: int = 0
    false_incidents: int = 0
    false_in_fault_free: int = 0


@dataclass(slots=True)
class Totals:
    faults: list[FaultResult] = field(default_factory=list)
    detection: dict[str, DetectionTotals] = field(
        default_factory=lambda: {name: DetectionTotals() for name in DETECTORS}
    )
    fault_free_s: float = 0.0
    runs: int = 0


def _touches(anomalies: Sequence[Anomaly], services: set[str]) -> bool:
    return any(set(a.services) & services for a in anomalies)


def _detect_faults(run: Run, detector: str, totals: DetectionTotals) -> list[float | None]:
    """Classify the run's incidents (totals) and return each fault's time to detect."""
    t0 = run.load_start_ns
    det = sliding_detection(run.spans, t0, run.end_ns, detector=detector)
    scopes = [
        (
            {f.service} | run.callers(f.service),
            _bucket(f.start_ns, t0) - MATCH_BEFORE_BUCKETS,
            _bucket(f.end_ns, t0) + MATCH_AFTER_BUCKETS,
        )
        for f in run.faults
    ]
    free_until = _bucket(min((f.start_ns for f in run.faults), default=run.end_ns), t0)
    for inc in det.incidents:
        lo, hi = _minute_index(inc.start), _minute_index(inc.end)
        if any(lo <= b and hi >= a and _touches(inc.anomalies, s) for s, a, b in scopes):
            totals.true_incidents += 1
        else:
            totals.false_incidents += 1
            totals.false_in_fault_free += lo < free_until
    out: list[float | None] = []
    for f, (scope, a, b) in zip(run.faults, scopes, strict=True):
        # A matching anomaly counts from the first step at or after the fault's start (one seen
        # earlier was noise that happened to touch the target, not a detection).
        first = min(
            (
                at
                for inc in det.incidents
                for x in inc.anomalies
                if a <= _minute_index(x.start) <= b and set(x.services) & scope
                if (at := t0 + det.first_seen[(x.subject, x.signal, x.start)] * BUCKET_NS)
                >= f.start_ns
            ),
            default=None,
        )
        out.append(None if first is None else (first - f.start_ns) / 1e9)
    return out


def evaluate_run(run: Run, totals: Totals, *, verbose: bool = True) -> None:
    t0 = run.load_start_ns
    # Fault-free time: the whole run when it has no fault, else the load before the first one.
    totals.fault_free_s += (min((f.start_ns for f in run.faults), default=run.end_ns) - t0) / 1e9
    totals.runs += 1
    detected = {name: _detect_faults(run, name, totals.detection[name]) for name in DETECTORS}
    for i, f in enumerate(run.faults):
        baseline = [s for s in run.spans if t0 <= s.start_ns < f.start_ns]
        window = [s for s in run.spans if f.start_ns <= s.start_ns < f.end_ns]
        ranks = {}
        for name, ranker in RANKERS.items():
            order = ranker(baseline, window)
            ranks[name] = order.index(f.service) + 1 if f.service in order else 0
        ttd = {name: found[i] for name, found in detected.items()}
        totals.faults.append(FaultResult(run.name, f.kind, f.service, ttd, ranks))
        if verbose:
            _print_fault(run.name, totals.faults[-1])
    if verbose and not run.faults:
        print(f"{run.name:<34} fault-free run")


def _print_fault(run: str, f: FaultResult) -> None:
    shown = " ".join("miss" if t is None else f"{t:4.1f}s" for t in f.detected_after_s.values())
    marks = "  ".join(f"{n}=#{r or '-'}" for n, r in f.ranks.items())
    print(f"{run:<34} {f.kind:<12} {f.service:<10} detect {shown}  {marks}", flush=True)


def _pct(hits: int, n: int) -> str:
    return f"{hits / n:6.1%}" if n else "     -"


def report(totals: Totals) -> str:
    """One table per concern: ranking per fault kind, detection per fault kind and overall."""
    names = list(RANKERS)
    by_kind: dict[str, list[FaultResult]] = defaultdict(list)
    for r in totals.faults:
        by_kind[r.kind].append(r)
    groups = [*sorted(by_kind.items()), ("ALL", totals.faults)]
    lines = ["Ranking, top-1 / top-3 (baseline: load start to fault start; window: the fault)"]
    lines.append(f"{'fault kind':<12} {'cases':>5}" + "".join(f" {n:>17}" for n in names))
    for kind, rows in groups:
        line = f"{kind:<12} {len(rows):>5}"
        for n in names:
            t1 = sum(r.ranks[n] == 1 for r in rows)
            t3 = sum(0 < r.ranks[n] <= 3 for r in rows)
            line += f"   {_pct(t1, len(rows))}/{_pct(t3, len(rows))}"
        lines.append(line)
    lines.append("")
    lines.append(
        "Detection (1 s buckets as the engine's minutes): recall, time to detect median/max"
    )
    lines.append(f"{'fault kind':<12} {'cases':>5}" + "".join(f" {n:>24}" for n in DETECTORS))
    for kind, rows in groups:
        line = f"{kind:<12} {len(rows):>5}"
        for n in DETECTORS:
            ttd = [t for r in rows if (t := r.detected_after_s[n]) is not None]
            med = f"{statistics.median(ttd):5.1f}s" if ttd else "     -"
            top = f"{max(ttd):5.1f}s" if ttd else "     -"
            line += f"  {_pct(len(ttd), len(rows))} {med} {top:>6}"
        lines.append(line)
    for n, d in totals.detection.items():
        total = d.true_incidents + d.false_incidents
        lines.append(
            f"{n}: precision {_pct(d.true_incidents, total).strip()} ({d.true_incidents} "
            f"matching / {total} incidents); {d.false_in_fault_free} false incident(s) started "
            f"in {totals.fault_free_s:.0f} s of fault-free load ({totals.runs} runs)"
        )
    return "\n".join(lines)


def _code_version() -> str:
    """Hash of the code the results depend on: a cached result is reused only for the same."""
    root = Path(__file__).resolve().parents[2]
    files = [
        "bench/rca/demo_corpus.py",
        "bench/rca/trainticket.py",
        "analytics/rca/ranking.py",
        "analytics/anomalies/detectors.py",
        "analytics/anomalies/incidents.py",
        "analytics/engine.py",
    ]
    digest = hashlib.sha256()
    for name in files:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


async def _evaluate_cached(run_dir: Path, *, verbose: bool) -> Totals:
    """One run's results, from RUN/eval-cache.json when made by the same code."""
    cache = run_dir / "eval-cache.json"
    version = _code_version()
    if cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("version") == version:
            part = Totals(
                [FaultResult(**f) for f in data["faults"]],
                {k: DetectionTotals(**v) for k, v in data["detection"].items()},
                data["fault_free_s"],
                data["runs"],
            )
            if verbose:
                for f in part.faults:
                    _print_fault(run_dir.name, f)
            return part
    part = Totals()
    evaluate_run(await load_run(run_dir), part, verbose=verbose)
    cache.write_text(json.dumps({"version": version, **asdict(part)}))
    return part


async def evaluate_runs(
    run_dirs: Sequence[Path], *, verbose: bool = True, held_out: Collection[str] = ()
) -> tuple[Totals, Totals]:
    """Totals over all runs, and over the runs named in `held_out`."""
    totals, held = Totals(), Totals()
    for run_dir in run_dirs:
        part = await _evaluate_cached(run_dir, verbose=verbose)
        for into in (totals, held) if run_dir.name in held_out else (totals,):
            into.faults += part.faults
            into.fault_free_s += part.fault_free_s
            into.runs += part.runs
            for name, d in part.detection.items():
                t = into.detection[name]
                t.true_incidents += d.true_incidents
                t.false_incidents += d.false_incidents
                t.false_in_fault_free += d.false_in_fault_free
    return totals, held


def run_dirs(paths: Sequence[str]) -> list[Path]:
    """Run directories: the paths themselves or, for a corpus directory, its children."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "truth.json").is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(c for c in p.iterdir() if (c / "truth.json").is_file())
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    if argv[0] == "--record":  # the old spelling: python demo_corpus.py --record DIR
        from bench.rca.record import main as record_main

        return record_main(argv[1:])
    seen: set[str] = set()
    if argv[0] == "--design-runs":  # FILE: runs looked at while choosing the method
        seen = set(Path(argv[1]).read_text().split())
        argv = argv[2:]
    dirs = run_dirs(argv)
    if not dirs:
        print(f"no recorded runs (truth.json) under {' '.join(argv)}", file=sys.stderr)
        return 1
    held_out = {d.name for d in dirs if d.name not in seen} if seen else set()
    totals, held = asyncio.run(evaluate_runs(dirs, held_out=held_out))
    print(f"\nALL {totals.runs} RUNS\n{report(totals)}")
    if held.runs:
        print(f"\nHELD-OUT {held.runs} RUNS (not looked at while choosing the method)")
        print(report(held))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
