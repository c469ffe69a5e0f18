"""Detectors over per-minute series of one subject (an edge `a->b` or a service).

- deviations: rate, error ratio and p99 latency (and median latency when the points carry it:
  at low traffic a p99 is nearly the maximum and too noisy to see a shift every request pays)
  per minute against a robust trailing baseline
  (median / MAD of the previous `baseline_minutes`); when a day of history exists, the same
  minutes one and more days earlier shift the expectation (daily seasonality, as SigNoz does).
- change points: the split of the series with the largest level shift of a metric.
- burn rate: multi-window SLO alerts (Google SRE workbook): 1 h and 5 m both above 14.4x,
  or 6 h and 30 m both above 6x the error budget of `slo_target`.
- new and vanished edges between a baseline period and the evaluated window.
- stopped instances: one replica of a service answers nothing successfully for a while
  (`stopped_min_points` buckets) while its siblings keep serving: a crashed replica behind a
  load balancer that fails over moves no service-level signal at all.
All are pure functions of their inputs (no clock): CPU-bound callers run them in a thread.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "Anomaly",
    "DetectorConfig",
    "Point",
    "detect_burn_rate",
    "detect_change_points",
    "detect_deviations",
    "detect_edge_changes",
    "detect_stopped_instances",
]

_MAD_SCALE = 1.4826
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Point:
    """RED of one subject in one minute (`p50_ms` optional: None leaves the median signal off)."""

    minute: datetime
    requests: int
    errors: int
    p99_ms: float
    p50_ms: float | None = None

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One finding: `signal` on `subject` from `start` to `end` (minute starts, inclusive)."""

    subject: str
    signal: str
    start: datetime
    end: datetime
    observed: float
    expected: float
    score: float
    instance: str = ""  # the replica, for per-instance signals (instance_stopped)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.subject.split("->"))


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds (robust z, plus an absolute floor so tiny shifts never fire)."""

    baseline_minutes: int = 60
    min_baseline_points: int = 10
    z_threshold: float = 5.0
    latency_floor_ms: float = 5.0
    latency_min_ratio: float = 1.5
    error_ratio_floor: float = 0.05
    min_errors: int = 3
    rate_min_change: float = 0.5
    min_requests: int = 5
    slo_target: float = 0.999
    change_min_segment: int = 5
    # Consecutive points a deviation must last before it is reported (an alert's `for:`):
    # 1 reports single-point spikes; 2 ignores them at the cost of one step of delay.
    min_run_points: int = 1
    # Consecutive points a tail-only deviation (latency_p99 of a series that also carries the
    # median) must last; 0 = min_run_points. A bucket of a few dozen requests has the slowest
    # one or two as its p99, so a host hiccup (a scheduling stall, a GC pause) that delays a
    # handful of requests moves it for a bucket or two; a shift every request pays moves the
    # median as well (reported after min_run_points), and one only some requests pay (a slow
    # replica, a partial fault) lasts as long as the fault does.
    tail_min_run_points: int = 0
    # A replica counts as stopped (detect_stopped_instances) after answering nothing
    # successfully for `stopped_min_points` consecutive buckets while its siblings serve, once
    # the successes it would have served by its own earlier share reach
    # `stopped_min_expected`, and only if that share was at least `stopped_min_share` of an
    # equal split. The sidecars' balancers (P2C over EWMA latency) starve a healthy replica as
    # a whole for up to 15 s (3 buckets of 5 s; the recorded live runs, bench/rca/README.md),
    # whatever its share, so counts alone do not separate that from a crash: 4 buckets.
    stopped_min_points: int = 4
    stopped_min_expected: float = 30.0
    stopped_min_share: float = 0.5
    # ...or `stopped_unreachable_points` buckets when the replica's own sidecar reported its
    # app unreachable (connection refused: meshlens.error.reason=connect_failure) in the bucket
    # before the silence or during it: direct evidence the balancer's starvation never gives
    # (in the 28 recorded live runs such reports came only from crashed replicas).
    stopped_unreachable_points: int = 2
    # The series' step (bucket width) in seconds: 60 for the per-minute aggregates, less for
    # the live engine's fine buckets from raw spans. Runs are merged and counted in steps;
    # `baseline_minutes` and the burn-rate windows stay wall-clock minutes.
    step_s: int = 60

    def __post_init__(self) -> None:
        if not 0 < self.slo_target < 1:
            raise ValueError(f"slo_target must be in (0, 1), got {self.slo_target}")
        if self.baseline_minutes < 2 or self.min_baseline_points < 2:
            raise ValueError("baseline_minutes and min_baseline_points must be >= 2")
        if self.change_min_segment < 2:
            raise ValueError("change_min_segment must be >= 2")
        if self.min_run_points < 1:
            raise ValueError("min_run_points must be >= 1")
        if self.tail_min_run_points < 0:
            raise ValueError("tail_min_run_points must be >= 0")
        if self.stopped_min_points < 1 or self.stopped_unreachable_points < 1:
            raise ValueError("stopped_min_points and stopped_unreachable_points must be >= 1")
        if self.stopped_min_expected < 0 or not 0 <= self.stopped_min_share <= 1:
            raise ValueError("stopped_min_expected must be >= 0 and stopped_min_share in [0, 1]")
        if not 0 < self.step_s <= 60 or 60 % self.step_s:
            raise ValueError(f"step_s must divide 60 (1..60), got {self.step_s}")

    @property
    def step(self) -> timedelta:
        return timedelta(seconds=self.step_s)


def _median_mad(values: Sequence[float]) -> tuple[float, float]:
    median = statistics.median(values)
    return median, _MAD_SCALE * statistics.median([abs(v - median) for v in values])


def _seasonal_shift(
    by_minute: Mapping[datetime, float], minute: datetime, trailing: Sequence[datetime]
) -> float:
    """Expected change from the trailing window to `minute`, seen on earlier days (else 0)."""
    shifts = []
    for days in range(1, 8):
        back = _DAY * days
        then = by_minute.get(minute - back)
        if then is None:  # no point that day: skip the trailing scan (most of the cost)
            continue
        before = [by_minute[m - back] for m in trailing if m - back in by_minute]
        if len(before) >= len(trailing) // 2 and before:
            shifts.append(then - statistics.median(before))
    return statistics.median(shifts) if len(shifts) >= 1 else 0.0


def _metrics(p: Point) -> dict[str, float]:
    out = {"rate": float(p.requests), "error_ratio": p.error_ratio, "latency_p99": p.p99_ms}
    if p.p50_ms is not None:
        out["latency_p50"] = p.p50_ms
    return out


_LATENCY = ("latency_p99", "latency_p50")


def _fires(
    cfg: DetectorConfig, signal: str, point: Point, value: float, expected: float, z: float
) -> bool:
    if signal in _LATENCY:
        return (
            z >= cfg.z_threshold
            and point.requests >= cfg.min_requests
            and value - expected >= cfg.latency_floor_ms
            and value >= cfg.latency_min_ratio * max(expected, 1e-9)
        )
    if signal == "error_ratio":
        return (
            z >= cfg.z_threshold
            and point.errors >= cfg.min_errors
            and value - expected >= cfg.error_ratio_floor
        )
    change = abs(value - expected) / max(expected, 1.0)
    return abs(z) >= cfg.z_threshold and change >= cfg.rate_min_change


def detect_deviations(
    subject: str, series: Sequence[Point], evaluate_from: datetime, cfg: DetectorConfig
) -> list[Anomaly]:
    """Minutes from `evaluate_from` on that deviate from their trailing baseline, as runs."""
    points = sorted(series, key=lambda p: p.minute)
    by_signal: dict[str, dict[datetime, float]] = {}
    for p in points:
        for name, value in _metrics(p).items():
            by_signal.setdefault(name, {})[p.minute] = value
    found: list[Anomaly] = []
    minutes = [p.minute for p in points]  # sorted: the trailing window is a slice
    for p in points:
        if p.minute < evaluate_from:
            continue
        lo = p.minute - timedelta(minutes=cfg.baseline_minutes)
        trailing = minutes[bisect.bisect_left(minutes, lo) : bisect.bisect_left(minutes, p.minute)]
        if len(trailing) < cfg.min_baseline_points:
            continue
        for name, value in _metrics(p).items():
            history = by_signal[name]
            known = [history[m] for m in trailing if m in history]
            if len(known) < cfg.min_baseline_points:
                continue
            median, scale = _median_mad(known)
            expected = median + _seasonal_shift(history, p.minute, trailing)
            if name == "error_ratio":  # binomial noise floor: few requests, noisy ratio
                scale = max(scale, math.sqrt(max(expected, 0.001) / max(p.requests, 1)))
            elif name == "rate":
                scale = max(scale, math.sqrt(max(expected, 1.0)))
            else:
                scale = max(scale, 1.0)
            z = (value - expected) / scale
            if _fires(cfg, name, p, value, expected, z):
                found.append(Anomaly(subject, name, p.minute, p.minute, value, expected, z))
    runs = _merge_runs(found, cfg.step)
    least = cfg.step * (cfg.min_run_points - 1)
    tail_points = cfg.tail_min_run_points or cfg.min_run_points
    with_median = bool(points) and all(p.p50_ms is not None for p in points)
    tail_least = cfg.step * (tail_points - 1) if with_median else least
    return [
        a for a in runs if a.end - a.start >= (tail_least if a.signal == "latency_p99" else least)
    ]


def _merge_runs(found: list[Anomaly], step: timedelta) -> list[Anomaly]:
    """Consecutive points of one signal become one anomaly (peak observed value and score)."""
    merged: list[Anomaly] = []
    for a in sorted(found, key=lambda a: (a.signal, a.start)):
        last = merged[-1] if merged else None
        if last and last.signal == a.signal and a.start - last.end <= step:
            peak = a if abs(a.score) > abs(last.score) else last
            merged[-1] = Anomaly(
                a.subject, a.signal, last.start, a.end, peak.observed, peak.expected, peak.score
            )
        else:
            merged.append(a)
    return sorted(merged, key=lambda a: (a.start, a.signal))


def detect_change_points(
    subject: str, series: Sequence[Point], evaluate_from: datetime, cfg: DetectorConfig
) -> list[Anomaly]:
    """The strongest level shift per metric whose new level starts at or after `evaluate_from`."""
    points = sorted(series, key=lambda p: p.minute)
    n, k = len(points), cfg.change_min_segment
    found = []
    signals = ["error_ratio", "latency_p99"]
    if points and all(p.p50_ms is not None for p in points):
        signals.append("latency_p50")
    for name in signals:
        values = [_metrics(p)[name] for p in points]
        floor = cfg.error_ratio_floor if name == "error_ratio" else cfg.latency_floor_ms
        # The split with the least total absolute deviation from each side's median (L1
        # segmentation), then judged by its level shift against the sides' spread.
        best: tuple[float, int] | None = None
        for split in range(k, n - k + 1):
            if points[split].minute < evaluate_from:
                continue
            before, after = values[:split], values[split:]
            m_b, m_a = statistics.median(before), statistics.median(after)
            cost = sum(abs(v - m_b) for v in before) + sum(abs(v - m_a) for v in after)
            if best is None or cost < best[0]:
                best = (cost, split)
        if best is None:
            continue
        split = best[1]
        median_b, mad_b = _median_mad(values[:split])
        median_a, mad_a = _median_mad(values[split:])
        shift = abs(median_a - median_b)
        stat = shift / max(mad_b, mad_a, floor / 2)
        if shift >= floor and stat >= cfg.z_threshold:
            after_m = statistics.median(values[split:])
            before_m = statistics.median(values[:split])
            found.append(
                Anomaly(
                    subject,
                    f"change_point_{name}",
                    points[split].minute,
                    points[-1].minute,
                    after_m,
                    before_m,
                    stat,
                )
            )
    return found


def _burn(
    points: Sequence[Point], end: datetime, minutes: int, budget: float, min_errors: int
) -> float:
    """Error ratio over the window in units of the budget; 0 below `min_errors` errors (at low
    traffic a single failed request would otherwise burn the budget "fast")."""
    lo = end - timedelta(minutes=minutes)
    requests = sum(p.requests for p in points if lo < p.minute <= end)
    errors = sum(p.errors for p in points if lo < p.minute <= end)
    return (errors / requests) / budget if requests and errors >= min_errors else 0.0


def detect_burn_rate(
    subject: str, series: Sequence[Point], evaluate_from: datetime, cfg: DetectorConfig
) -> list[Anomaly]:
    """Multi-window burn-rate alerts per minute (fast: 1h+5m > 14.4x, slow: 6h+30m > 6x)."""
    budget = 1.0 - cfg.slo_target
    points = sorted(series, key=lambda p: p.minute)
    found = []
    for p in points:
        if p.minute < evaluate_from:
            continue
        for signal, (long_m, short_m, factor) in {
            "burn_rate_fast": (60, 5, 14.4),
            "burn_rate_slow": (360, 30, 6.0),
        }.items():
            long_burn = _burn(points, p.minute, long_m, budget, cfg.min_errors)
            short_burn = _burn(points, p.minute, short_m, budget, cfg.min_errors)
            if long_burn > factor and short_burn > factor:
                found.append(
                    Anomaly(
                        subject,
                        signal,
                        p.minute,
                        p.minute,
                        long_burn,
                        factor,
                        min(long_burn, short_burn) / factor,
                    )
                )
    return _merge_runs(found, cfg.step)


def detect_edge_changes(
    baseline: Mapping[str, int],
    window: Mapping[str, int],
    start: datetime,
    end: datetime,
    cfg: DetectorConfig,
) -> list[Anomaly]:
    """Edges with traffic now but none in the baseline (new), or the reverse (vanished).

    Both need a baseline that saw traffic at all (an empty history says nothing)."""
    if not any(baseline.values()):
        return []
    found = []
    for edge, count in sorted(window.items()):
        if count >= cfg.min_requests and baseline.get(edge, 0) == 0:
            found.append(Anomaly(edge, "new_edge", start, end, float(count), 0.0, float(count)))
    for edge, count in sorted(baseline.items()):
        if count >= cfg.min_requests and window.get(edge, 0) == 0 and any(window.values()):
            found.append(
                Anomaly(edge, "vanished_edge", start, end, 0.0, float(count), float(count))
            )
    return found


def _served(p: Point) -> int:
    return p.requests - p.errors


def detect_stopped_instances(
    service: str,
    instances: Mapping[str, Sequence[Point]],
    evaluate_from: datetime,
    cfg: DetectorConfig,
    unreachable: Mapping[str, Collection[datetime]] | None = None,
) -> list[Anomaly]:
    """Instances of `service` (server RED per instance and bucket) that answered no request
    successfully in a run of consecutive buckets, ending at or after `evaluate_from`, in each
    of which their siblings answered some, when that silence is implausible for a working
    replica: at least `cfg.stopped_min_points` buckets long, and the successes it would
    have answered (the siblings' successes during the silence times its share of the
    service's successes in the `baseline_minutes` before it, relative to theirs; at most an
    equal split) at least `cfg.stopped_min_expected`; its share at least
    `cfg.stopped_min_share` of an equal split (a replica the balancer was not really using
    says nothing by staying unused).

    Why these numbers (DetectorConfig): were requests spread independently by share, zero of
    30 expected would have a chance of e^-30; but the balancer starves a replica as a whole
    for up to 15 s now and then (3 buckets of 5 s; its siblings served 141-156 meanwhile),
    so the run must also outlast that. A quiet service is judged later (when 30 are expected),
    never on a few missing requests. Every replica silent at once (traffic stopped, a
    scale-down to zero) is no silence: no sibling serves. One replica removed on purpose looks
    the same as a crashed one: no inventory of intended replicas is read.

    One anomaly per silence (subject: the service, `instance`: the replica; start: its first
    silent bucket), observed 0 against the expected successes, score: the silent buckets.

    `unreachable`: per instance, the buckets in which its own sidecar could not reach its app
    (connection refused); a silence that begins right after such a bucket or holds one needs
    only `cfg.stopped_unreachable_points` buckets (the other conditions stay)."""
    if len(instances) < 2:
        return []
    served: dict[str, dict[datetime, int]] = {
        name: {p.minute: _served(p) for p in points} for name, points in instances.items()
    }
    buckets = sorted({m for by_bucket in served.values() for m in by_bucket})
    if not buckets:
        return []
    grid = [
        buckets[0] + cfg.step * k for k in range(int((buckets[-1] - buckets[0]) / cfg.step) + 1)
    ]
    equal = 1.0 / len(served)
    found = []
    for name in sorted(served):
        own = served[name]
        others = [sum(by.get(b, 0) for other, by in served.items() if other != name) for b in grid]
        silent = [own.get(b, 0) == 0 and others[i] > 0 for i, b in enumerate(grid)]
        k = 0
        while k < len(grid):
            if not silent[k]:
                k += 1
                continue
            end = k
            while end + 1 < len(grid) and silent[end + 1]:
                end += 1
            start_at, end_at = grid[k], grid[end]
            since = start_at - timedelta(minutes=cfg.baseline_minutes)
            before = [i for i in range(k) if grid[i] >= since]
            mine = sum(own.get(grid[i], 0) for i in before)
            theirs = sum(others[i] for i in before)
            share = mine / (mine + theirs) if mine else 0.0
            # Its successes per sibling success before the silence, at most an equal split's.
            ratio = min(mine / theirs, equal / (1.0 - equal)) if theirs else equal / (1 - equal)
            expected = ratio * sum(others[k : end + 1])
            reported = (unreachable or {}).get(name, ())
            confirmed = any(start_at - cfg.step <= b <= end_at for b in reported)
            least = cfg.stopped_unreachable_points if confirmed else cfg.stopped_min_points
            if (
                end - k + 1 >= least
                and end_at >= evaluate_from
                and share >= cfg.stopped_min_share * equal
                and expected >= cfg.stopped_min_expected
            ):
                found.append(
                    Anomaly(
                        service,
                        "instance_stopped",
                        start_at,
                        end_at,
                        0.0,
                        expected,
                        float(end - k + 1),
                        instance=name,
                    )
                )
            k = end + 1
    return found
