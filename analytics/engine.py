"""The analysis engine: detect anomalies in a window, group incidents, rank root causes.

`analyze(store, window)` is what `meshlens analyze` runs once and `AnalysisEngine` (a `meshlens up`
component) runs every `interval_s` over the last `lookback_s`, writing `meshlens_incidents`.
Series come from the per-minute aggregates, or from raw spans when a window has none.

A minute bucket cannot alert within 30 s of a fault (the minute must end, and a deviation must
last two of them). So the live engine also runs a fine path every `fine.step_s` (5 s): edge RED
per 5 s bucket straight from the raw sidecar CLIENT spans of the last minutes
(`fine_edge_series`), deviations only (`detect_fine`), a few seconds after each bucket ends so
its spans have landed. Both paths' anomalies are grouped into the same incidents.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics.anomalies import (
    Anomaly,
    DetectorConfig,
    Incident,
    Point,
    detect_burn_rate,
    detect_change_points,
    detect_deviations,
    detect_edge_changes,
    detect_stopped_instances,
    group_incidents,
)
from analytics.anomalies.repository import IncidentRepository
from analytics.callgraph import EdgePoint, TimeWindow, edge_series
from analytics.callgraph.service import Stats
from analytics.periodic import PeriodicComponent
from analytics.rca import Candidate, rank_root_causes
from analytics.rca.repository import load_spans
from collector.schema.meshlens_edges_1m import SIDECAR_SPAN
from collector.store import Store

__all__ = [
    "FINE_DETECTOR",
    "TAIL_OPEN",
    "AnalysisEngine",
    "AnalyzedIncident",
    "analyze",
    "detect",
    "detect_fine",
    "fine_edge_series",
    "fine_instance_series",
    "fine_instances",
    "fine_unreachable",
    "rank_incident",
]

logger = logging.getLogger(__name__)

RCA_BASELINE = timedelta(minutes=30)
TOP_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class AnalyzedIncident:
    """An incident and its ranked root-cause candidates (best first)."""

    incident: Incident
    candidates: tuple[Candidate, ...]

    def record(self) -> dict[str, Any]:
        """The JSON-ready form stored in meshlens_incidents and returned by the API."""
        inc = self.incident
        return {
            "id": inc.id,
            "start": inc.start,
            "end": inc.end + timedelta(minutes=1),
            "summary": inc.summary,
            "services": list(inc.services),
            "anomalies": [
                {**asdict(a), "start": a.start.isoformat(), "end": a.end.isoformat()}
                for a in inc.anomalies
            ],
            "root_causes": [asdict(c) for c in self.candidates],
        }


# What the engine runs: the median-latency signal (fed by `_series`) and a deviation must last
# two minutes, as measured on the demo fault corpus (bench/rca/README.md: precision 73 % -> 96 %
# at the same recall, one minute more to detect).
LIVE_DETECTOR = DetectorConfig(min_run_points=2)
# The live fine path: 5 s buckets, 10 minutes of trailing baseline (at least 60 s of it), a
# deviation must last two buckets: an alert 10-15 s after a shift starts, plus `settle_s`.
# (10 s buckets alerted 23-33 s after a shift in the first live run: too close to 30 s.)
# Evaluated over the last FINE_EVALUATE only (the minute path covers the rest of the lookback).
# A tail-only (p99) deviation must last four buckets, 20 s: a 5 s bucket's p99 is its slowest
# request or two, which a host stall moves for 10-15 s (DetectorConfig.tail_min_run_points;
# bench/rca/README.md "live replay").
FINE_DETECTOR = DetectorConfig(
    step_s=5,
    baseline_minutes=10,
    min_baseline_points=12,
    min_run_points=2,
    tail_min_run_points=4,
)
FINE_EVALUATE = timedelta(minutes=2)
# A tail-only rise (latency_p99) opens an incident of its own only once it has lasted a minute
# (what the minute path needs: two minute buckets); shorter, it joins an incident a stronger
# signal opened in its neighbourhood (group_incidents' tail_min). In the 28 recorded live runs
# no fault was first seen by a tail-only rise, and the only two incidents such rises opened
# were false: 20 s and 40 s of p99 just before a fault in the same neighbourhood, which then
# joined them (bench/rca/README.md "live replay").
TAIL_OPEN = timedelta(minutes=1)

# Edge RED per `step` seconds from sidecar CLIENT spans with a callee: what meshlens_edges_1m
# aggregates per minute (same span filter, callee and error rule), at a finer step.
_FINE_SERIES = f"""
SELECT intDiv(toUnixTimestamp(Timestamp), {{step:UInt32}}) * {{step:UInt32}} AS bucket_s,
       ServiceName AS caller,
       if(SpanAttributes['meshlens.upstream'] != '', SpanAttributes['meshlens.upstream'],
          SpanAttributes['server.address']) AS callee,
       toUInt64(count()) AS requests,
       toUInt64(countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR')
         OR toUInt16OrZero(SpanAttributes['http.response.status_code']) >= 500)) AS errors,
       avg(Duration) / 1e6 AS mean_ms,
       quantiles(0.5, 0.9, 0.99)(Duration) AS q
FROM otel_traces
WHERE Timestamp >= {{start:DateTime64(9)}} AND Timestamp < {{end:DateTime64(9)}}
  AND SpanKind IN ('Client', 'SPAN_KIND_CLIENT') AND callee != '' AND {SIDECAR_SPAN}
GROUP BY bucket_s, caller, callee
ORDER BY bucket_s, caller, callee
"""


async def _fine_rows(
    store: Store, sql: str, window: TimeWindow, step_s: int
) -> list[dict[str, Any]]:
    """The rows of one fine-path query over `window` in `step_s` buckets."""
    if step_s < 1:
        raise ValueError(f"step_s must be >= 1, got {step_s}")
    return await store.query(sql, {"start": window.start, "end": window.end, "step": step_s})


async def fine_edge_series(store: Store, window: TimeWindow, step_s: int) -> list[EdgePoint]:
    """Edge RED per `step_s` bucket of `window` (bounds on bucket edges) from raw spans;
    `EdgePoint.minute` is the bucket's start."""
    rows = await _fine_rows(store, _FINE_SERIES, window, step_s)
    out = []
    for r in rows:
        requests, errors = int(r["requests"]), int(r["errors"])
        q = [float(x) / 1e6 for x in r["q"]] or [0.0, 0.0, 0.0]
        stats = Stats(
            requests=requests,
            errors=errors,
            rate_per_s=requests / step_s,
            error_ratio=errors / requests if requests else 0.0,
            mean_ms=float(r["mean_ms"] or 0.0),
            p50_ms=q[0],
            p90_ms=q[1],
            p99_ms=q[2],
        )
        at = datetime.fromtimestamp(int(r["bucket_s"]), UTC)
        out.append(EdgePoint(at, r["caller"], r["callee"], stats))
    return out


# Server RED per instance (service.instance.id) and `step` seconds from sidecar SERVER spans: a
# replica that stops answering while its siblings serve (detect_stopped_instances).
_FINE_INSTANCES = f"""
SELECT intDiv(toUnixTimestamp(Timestamp), {{step:UInt32}}) * {{step:UInt32}} AS bucket_s,
       ServiceName AS service,
       ResourceAttributes['service.instance.id'] AS instance,
       toUInt64(count()) AS requests,
       toUInt64(countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR')
         OR toUInt16OrZero(SpanAttributes['http.response.status_code']) >= 500)) AS errors,
       toUInt64(countIf(SpanAttributes['meshlens.error.reason'] = 'connect_failure'))
         AS unreachable
FROM otel_traces
WHERE Timestamp >= {{start:DateTime64(9)}} AND Timestamp < {{end:DateTime64(9)}}
  AND SpanKind IN ('Server', 'SPAN_KIND_SERVER') AND instance != '' AND {SIDECAR_SPAN}
GROUP BY bucket_s, service, instance
ORDER BY bucket_s, service, instance
"""


InstanceSeries = dict[str, dict[str, list[Point]]]
Unreachable = dict[str, dict[str, set[datetime]]]


async def fine_instances(
    store: Store, window: TimeWindow, step_s: int
) -> tuple[InstanceSeries, Unreachable]:
    """One query for both per-instance inputs of detect_stopped_instances: server requests and
    errors per service, instance and `step_s` bucket of `window` (`Point.minute` is the
    bucket's start; no latency: p99_ms is 0), and the buckets in which the instance's own
    sidecar reported its app unreachable (meshlens.error.reason=connect_failure: connection
    refused, so the replica is down, not starved by the balancer)."""
    rows = await _fine_rows(store, _FINE_INSTANCES, window, step_s)
    series: dict[str, dict[str, list[Point]]] = defaultdict(lambda: defaultdict(list))
    unreachable: dict[str, dict[str, set[datetime]]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        at = datetime.fromtimestamp(int(r["bucket_s"]), UTC)
        point = Point(at, int(r["requests"]), int(r["errors"]), 0.0)
        series[r["service"]][r["instance"]].append(point)
        if int(r["unreachable"]):
            unreachable[r["service"]][r["instance"]].add(at)
    return (
        {service: dict(by_instance) for service, by_instance in series.items()},
        {service: dict(by_instance) for service, by_instance in unreachable.items()},
    )


async def fine_instance_series(store: Store, window: TimeWindow, step_s: int) -> InstanceSeries:
    """The series part of `fine_instances`."""
    return (await fine_instances(store, window, step_s))[0]


async def fine_unreachable(store: Store, window: TimeWindow, step_s: int) -> Unreachable:
    """The unreachable part of `fine_instances`."""
    return (await fine_instances(store, window, step_s))[1]


def _worst_median(group: Sequence[EdgePoint]) -> float | None:
    """The highest edge median, or None (median signal off) when an edge has none."""
    medians = [g.stats.p50_ms for g in group]
    return None if any(m is None for m in medians) else max(m for m in medians if m is not None)


def _series(points: Sequence[EdgePoint]) -> dict[str, list[Point]]:
    """Per edge `a->b`, and per service (incoming edges summed, worst p99 and median)."""
    edges: dict[str, list[Point]] = defaultdict(list)
    incoming: dict[tuple[str, datetime], list[EdgePoint]] = defaultdict(list)
    for p in points:
        s = p.stats
        edges[f"{p.caller}->{p.callee}"].append(
            Point(p.minute, s.requests, s.errors, s.p99_ms or 0.0, s.p50_ms)
        )
        incoming[(p.callee, p.minute)].append(p)
    services: dict[str, list[Point]] = defaultdict(list)
    for (service, minute), group in sorted(incoming.items(), key=lambda kv: kv[0][1]):
        services[service].append(
            Point(
                minute,
                sum(g.stats.requests for g in group),
                sum(g.stats.errors for g in group),
                max(g.stats.p99_ms or 0.0 for g in group),
                _worst_median(group),
            )
        )
    return {**edges, **services}


def detect(points: Sequence[EdgePoint], window: TimeWindow, cfg: DetectorConfig) -> list[Anomaly]:
    """Every detector over the per-minute points (CPU-bound; run it in a thread)."""
    found: list[Anomaly] = []
    recent = window.start - timedelta(minutes=cfg.baseline_minutes)
    for subject, series in sorted(_series(points).items()):
        found += detect_deviations(subject, series, window.start, cfg)
        # Change points are quadratic in the series: only the baseline hour and the window.
        tail = [p for p in series if p.minute >= recent]
        found += detect_change_points(subject, tail, window.start, cfg)
        found += detect_burn_rate(subject, series, window.start, cfg)
    before: dict[str, int] = defaultdict(int)
    during: dict[str, int] = defaultdict(int)
    for p in points:
        side = during if p.minute >= window.start else before
        side[f"{p.caller}->{p.callee}"] += p.stats.requests
    found += detect_edge_changes(before, during, window.start, window.end, cfg)
    return found


def detect_fine(
    points: Sequence[EdgePoint], evaluate_from: datetime, cfg: DetectorConfig
) -> list[Anomaly]:
    """The fine path's detector: deviations of every edge and service from `evaluate_from` on
    (change points, burn rates and edge changes are the minute path's)."""
    found: list[Anomaly] = []
    for subject, series in sorted(_series(points).items()):
        found += detect_deviations(subject, series, evaluate_from, cfg)
    return found


def _floor(at: datetime, step_s: int) -> datetime:
    return datetime.fromtimestamp(int(at.timestamp()) // step_s * step_s, UTC)


Edges = frozenset[tuple[str, str]]


def _edges(points: Sequence[EdgePoint]) -> Edges:
    """The service map the points show (caller, callee), for grouping by neighbourhood."""
    return frozenset((p.caller, p.callee) for p in points)


async def _minute_anomalies(
    store: Store, window: TimeWindow, cfg: DetectorConfig
) -> tuple[list[Anomaly], Edges]:
    # The slow burn-rate alert looks 6 h back. Daily seasonality would need days of history,
    # which the engine does not fetch yet (detect_deviations uses it when given).
    back = timedelta(minutes=max(cfg.baseline_minutes, 360))
    points = await edge_series(store, TimeWindow(window.start - back, window.end))
    return await asyncio.to_thread(detect, points, window, cfg), _edges(points)


async def _fine_anomalies(
    store: Store, end: datetime, cfg: DetectorConfig
) -> tuple[list[Anomaly], Edges]:
    """Fine-path anomalies in the FINE_EVALUATE before `end` (a bucket boundary)."""
    evaluate_from = end - FINE_EVALUATE
    history = TimeWindow(evaluate_from - timedelta(minutes=cfg.baseline_minutes), end)
    points = await fine_edge_series(store, history, cfg.step_s)
    instances, unreachable = await fine_instances(store, history, cfg.step_s)

    def run() -> list[Anomaly]:
        found = detect_fine(points, evaluate_from, cfg)
        for service, by_instance in sorted(instances.items()):
            found += detect_stopped_instances(
                service, by_instance, evaluate_from, cfg, unreachable.get(service)
            )
        return found

    return await asyncio.to_thread(run), _edges(points)


async def rank_incident(
    store: Store, incident: Incident, *, until: datetime | None = None
) -> tuple[Candidate, ...]:
    """The top root-cause candidates of `incident` (its window against the 30 min before);
    `until` caps the window (the engine's clock: an offline replay must not see later spans)."""
    baseline = await load_spans(store, incident.start - RCA_BASELINE, incident.start)
    end = incident.end + timedelta(minutes=1)
    spans = await load_spans(store, incident.start, min(end, until) if until else end)
    ranked = await asyncio.to_thread(rank_root_causes, baseline, spans)
    involved = set(incident.services)
    # Services the incident's anomalies name first, then the rest (the window's spans also hold
    # whatever else went wrong in the mesh meanwhile: another incident's cause must not take
    # this one's top places); the ranking orders within each.
    ranked.sort(key=lambda c: (c.service not in involved, -c.score, c.service))
    return tuple(ranked[:TOP_CANDIDATES])


async def analyze(
    store: Store, window: TimeWindow, *, cfg: DetectorConfig | None = None
) -> list[AnalyzedIncident]:
    """Incidents starting in `window` with ranked root causes (series history: 6 h before)."""
    anomalies, edges = await _minute_anomalies(store, window, cfg or LIVE_DETECTOR)
    return [
        AnalyzedIncident(incident, await rank_incident(store, incident))
        for incident in group_incidents(anomalies, edges=edges)
    ]


@dataclass(frozen=True, slots=True)
class _Ranked:
    span: tuple[datetime, datetime]
    at: float
    candidates: tuple[Candidate, ...]


class AnalysisEngine(PeriodicComponent):
    """A component: analyze the last `lookback_s` and upsert incidents, from the per-minute
    aggregates every `interval_s` and, with `fine` (default FINE_DETECTOR), from raw-span buckets
    every `fine.step_s`, `settle_s` after each bucket ends (spans take ~1-2 s to land).

    An incident keeps its id while it grows (a new grouping that overlaps a stored incident in
    time and services updates it), and is re-ranked at most every `rank_every_s` while it changes.
    """

    name = "analysis"
    _failure_message = "analysis run failed"

    def __init__(
        self,
        store: Store,
        *,
        interval_s: float = 60.0,
        lookback_s: float = 15 * 60.0,
        cfg: DetectorConfig | None = None,
        fine: DetectorConfig | None = FINE_DETECTOR,
        settle_s: float = 3.0,
        rank_every_s: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0 or lookback_s < 60:
            raise ValueError("interval_s must be > 0 and lookback_s >= 60")
        if settle_s < 0 or rank_every_s < 0:
            raise ValueError("settle_s and rank_every_s must be >= 0")
        super().__init__()
        self._store = store
        self._repo = IncidentRepository(store)
        self._interval_s = interval_s
        self._lookback = timedelta(seconds=lookback_s)
        self._cfg = cfg or LIVE_DETECTOR
        self._fine = fine
        self._settle_s = settle_s
        self._rank_every_s = rank_every_s
        self._wall_clock = wall_clock
        self._minute_at: float | None = None
        self._minute_found: list[Anomaly] = []
        self._minute_edges: Edges = frozenset()
        self._known: dict[str, tuple[datetime, datetime, frozenset[str]]] = {}
        self._ranked: dict[str, _Ranked] = {}
        self._opened: set[str] = set()
        self._seen: dict[tuple[str, str, datetime], datetime] = {}

    async def _prepare(self) -> None:
        await self._repo.ensure_table()

    async def run_once(self) -> list[AnalyzedIncident]:
        """Analyze the lookback (minute path when due, fine path always) and store incidents."""
        t = self._wall_clock()
        wall = datetime.fromtimestamp(t, UTC)
        if self._minute_at is None or t - self._minute_at >= self._interval_s:
            minute = wall.replace(second=0, microsecond=0)
            window = TimeWindow(minute - self._lookback, minute)
            self._minute_found, self._minute_edges = await _minute_anomalies(
                self._store, window, self._cfg
            )
            self._minute_at = t
        anomalies = list(self._minute_found)
        edges = set(self._minute_edges)
        if self._fine is not None:
            end = _floor(wall - timedelta(seconds=self._settle_s), self._fine.step_s)
            fine_found, fine_edges = await _fine_anomalies(self._store, end, self._fine)
            anomalies += fine_found
            edges |= fine_edges
        self._forget(wall - self._lookback)
        self._log_new(anomalies)
        found = []
        used: set[str] = set()
        for incident in group_incidents(anomalies, edges=edges, tail_min=TAIL_OPEN):
            stable = self._stable(incident, used)
            analyzed = AnalyzedIncident(stable, await self._candidates(stable, t))
            found.append(analyzed)
            if stable.id not in self._opened:
                self._opened.add(stable.id)
                # The alert's time: benches measure time to detect from this line.
                logger.info(
                    "incident opened",
                    extra={
                        "incident": stable.id,
                        "start": stable.start.isoformat(),
                        "services": list(stable.services),
                        "signals": sorted({a.signal for a in stable.anomalies}),
                        "anomalies": [
                            {"subject": a.subject, "signal": a.signal, "start": a.start.isoformat()}
                            for a in stable.anomalies
                        ],
                        "root_causes": [c.service for c in analyzed.candidates[:3]],
                    },
                )
        await self._repo.upsert([a.record() for a in found], wall)
        self.runs += 1
        return found

    def _log_new(self, anomalies: Sequence[Anomaly]) -> None:
        """Log each anomaly the first time it is seen (benches time detection from these)."""
        for a in anomalies:
            key = (f"{a.subject}@{a.instance}" if a.instance else a.subject, a.signal, a.start)
            if key in self._seen:
                continue
            self._seen[key] = a.end
            logger.info(
                "anomaly found",
                extra={
                    "subject": a.subject,
                    "signal": a.signal,
                    **({"instance": a.instance} if a.instance else {}),
                    "start": a.start.isoformat(),
                    "observed": round(a.observed, 3),
                    "expected": round(a.expected, 3),
                    "score": round(a.score, 2),
                },
            )

    def _stable(self, incident: Incident, used: set[str]) -> Incident:
        """`incident` under the id of the stored incident it continues, if any."""
        gap = timedelta(minutes=2)
        services = frozenset(incident.services)
        for known_id, (start, end, seen) in self._known.items():
            overlaps = start <= incident.end + gap and incident.start <= end + gap
            if known_id not in used and overlaps and seen & services:
                incident = replace(incident, id=known_id, start=min(start, incident.start))
                services |= seen
                break
        used.add(incident.id)
        previous = self._known.get(incident.id)
        end = max(incident.end, previous[1]) if previous else incident.end
        self._known[incident.id] = (incident.start, end, services)
        return incident

    def _forget(self, before: datetime) -> None:
        for key in [k for k, end in self._seen.items() if end < before]:
            del self._seen[key]
        for known_id in [k for k, (_, end, _) in self._known.items() if end < before]:
            del self._known[known_id]
            self._ranked.pop(known_id, None)
            self._opened.discard(known_id)

    async def _candidates(self, incident: Incident, t: float) -> tuple[Candidate, ...]:
        cached = self._ranked.get(incident.id)
        span = (incident.start, incident.end)
        if cached and (cached.span == span or t - cached.at < self._rank_every_s):
            return cached.candidates
        until = datetime.fromtimestamp(t, UTC)
        candidates = await rank_incident(self._store, incident, until=until)
        self._ranked[incident.id] = _Ranked(span, t, candidates)
        return candidates

    def _delay(self) -> float:
        """Seconds to the next run: the next fine bucket's end plus `settle_s`, else interval_s."""
        if self._fine is None:
            return self._interval_s
        step = self._fine.step_s
        return step - (self._wall_clock() - self._settle_s) % step or float(step)
