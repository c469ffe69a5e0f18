"""Rank candidate root-cause services by comparing an incident window's spans to a baseline.

A fixed method with no fitted parameters; every score is a robust z (median / MAD) or a rate:
- self time: a span's duration minus the time covered by its children. A slow leaf raises
  its own self time; its callers only inherit the time (their self time stays put).
- edge gap: caller span minus callee span across a service boundary (network, queueing,
  connection setup). It is charged to both endpoints: a delayed pod slows every edge it is on.
- error origin: a failing span with no failed span under it is where an error started;
  callers that only pass it on are not origins. A client span with a known callee and no
  child span counts for the callee (the sidecar knows whom it called). A span fails by its
  status or by an error-level log line written under it (`with_logged_errors`): code-level
  faults (an exception caught and logged, a wrong return value) often set no status.
score = max(self z, 0) + mean positive edge-gap z over the service's edges + max(origin z, 0).
A shift's z is over the baseline's spread plus the window median's sampling error (MAD / sqrt
n), so five scattered window values do not outweigh a shift seen in hundreds.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["Candidate", "SpanRow", "rank_root_causes", "with_logged_errors"]

_MAD_SCALE = 1.4826
_FLOOR_NS = 1_000_000  # 1 ms: shifts below timer noise never dominate


@dataclass(frozen=True, slots=True)
class SpanRow:
    """The span fields root-cause ranking needs."""

    trace_id: str
    span_id: str
    parent_span_id: str
    service: str
    name: str
    start_ns: int
    duration_ns: int
    error: bool = False
    peer: str = ""  # the callee a CLIENT span names (meshlens.upstream / server.address)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ranked service and the numbers that put it there."""

    service: str
    score: float
    self_time_z: float
    self_time_change_ms: float
    inherited_change_ms: float
    edge_gap_z: float
    error_origin_z: float
    error_origins: int
    spans: int
    evidence: tuple[str, ...]


def with_logged_errors(
    spans: Sequence[SpanRow], logged: Collection[tuple[str, str]]
) -> list[SpanRow]:
    """`spans` with those named by an error-level log line, (trace id, span id), failed."""
    return [
        s if s.error or (s.trace_id, s.span_id) not in logged else replace(s, error=True)
        for s in spans
    ]


def _self_times(spans: Sequence[SpanRow]) -> tuple[list[int], dict[tuple[str, str], int]]:
    """Self time per span (same order) and the index of each span by (trace, span id)."""
    index = {(s.trace_id, s.span_id): i for i, s in enumerate(spans)}
    children: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(spans):
        parent = index.get((s.trace_id, s.parent_span_id)) if s.parent_span_id else None
        if parent is not None:
            children[parent].append(i)
    out: list[int] = []
    for i, s in enumerate(spans):
        end = s.start_ns + s.duration_ns
        intervals = sorted(
            (max(spans[k].start_ns, s.start_ns), min(spans[k].start_ns + spans[k].duration_ns, end))
            for k in children.get(i, ())
        )
        covered, cur_a, cur_b = 0, 0, -1
        for a, b in intervals:
            if b <= a:
                continue
            if a > cur_b:
                covered += max(cur_b - cur_a, 0)
                cur_a, cur_b = a, b
            else:
                cur_b = max(cur_b, b)
        covered += max(cur_b - cur_a, 0)
        out.append(max(s.duration_ns - covered, 0))
    return out, index


def _mad(values: Sequence[float], median: float) -> float:
    return statistics.median([abs(x - median) for x in values])


def _robust_z(baseline: Sequence[float], window: Sequence[float], sampled: bool = True) -> float:
    """Shift of the median over the baseline's spread plus (`sampled`) the window median's own
    sampling error (spread / sqrt(n)): a few scattered window values are not a shift."""
    median, now = statistics.median(baseline), statistics.median(window)
    spread = _mad(baseline, median)
    if sampled:
        spread = math.hypot(spread, _mad(window, now) / math.sqrt(len(window)))
    return (now - median) / (_MAD_SCALE * spread + _FLOOR_NS)


@dataclass(slots=True)
class _Side:
    self_by_op: dict[tuple[str, str], list[int]]
    total_by_op: dict[tuple[str, str], list[int]]
    gaps: dict[tuple[str, str], list[int]]
    origins: dict[str, int]
    spans: dict[str, int]


def _summarise(spans: Sequence[SpanRow]) -> _Side:
    selfs, index = _self_times(spans)
    side = _Side(
        defaultdict(list), defaultdict(list), defaultdict(list), defaultdict(int), defaultdict(int)
    )
    failing_below: set[int] = set()  # spans with a failed span anywhere under them
    fan_out: dict[int, int] = defaultdict(int)
    for s in spans:
        parent_of = index.get((s.trace_id, s.parent_span_id)) if s.parent_span_id else None
        if parent_of is not None:
            fan_out[parent_of] += 1
        # Up the ancestors (a span whose error was only logged may sit under a client span
        # that carries no status); stop at one already marked, so each span is marked once.
        while s.error and parent_of is not None and parent_of not in failing_below:
            failing_below.add(parent_of)
            up = spans[parent_of]
            parent_of = index.get((up.trace_id, up.parent_span_id)) if up.parent_span_id else None
    for i, s in enumerate(spans):
        # A call with a known callee and no span under it (callee not instrumented, its span
        # sampled away, or the call failed before reaching it) is evidence about the callee.
        owner = s.peer if s.peer and i not in fan_out else s.service
        key = (owner, s.name if owner == s.service else f"{s.name} <- {s.service}")
        side.self_by_op[key].append(selfs[i])
        side.total_by_op[key].append(s.duration_ns)
        side.spans[owner] += 1
        if s.error and i not in failing_below:
            side.origins[owner] += 1
        parent = index.get((s.trace_id, s.parent_span_id)) if s.parent_span_id else None
        # Only a parent with this one child measures the call itself (a client span): with
        # several children the difference is the parent's own work and its other calls.
        if parent is not None and spans[parent].service != s.service and fan_out[parent] == 1:
            side.gaps[(spans[parent].service, s.service)].append(
                spans[parent].duration_ns - s.duration_ns
            )
    return side


def _origin_z(base: _Side, window: _Side, service: str) -> float:
    n_w = window.spans.get(service, 0)
    if n_w == 0:
        return 0.0
    p_b = base.origins.get(service, 0) / max(base.spans.get(service, 0), 1)
    p_w = window.origins.get(service, 0) / n_w
    return (p_w - p_b) / math.sqrt((p_b * (1 - p_b) + 1 / n_w) / n_w)


def rank_root_causes(
    baseline: Sequence[SpanRow],
    window: Sequence[SpanRow],
    *,
    min_samples: int = 5,
    edge_gap: Literal["mean", "sum"] = "mean",
    sampled_z: bool = True,
) -> list[Candidate]:
    """Services of `window` ranked most-likely-first. CPU-bound: call it off the event loop.

    `edge_gap` folds a service's edge-gap z-scores: the mean over the edges it is on (default:
    a delayed service has all its edges slow, a neighbour only the one edge to it) or the sum.
    `sampled_z` False judges shifts by the baseline's spread alone (the method before).
    """
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    base, win = _summarise(baseline), _summarise(window)
    self_z: dict[str, float] = defaultdict(float)
    self_ms: dict[str, float] = defaultdict(float)
    inherited_ms: dict[str, float] = defaultdict(float)
    notes: dict[str, list[str]] = defaultdict(list)
    for key, values in win.self_by_op.items():
        before = base.self_by_op.get(key, [])
        if len(before) < min_samples or len(values) < min_samples:
            continue
        z = _robust_z(before, values, sampled_z)
        change_ms = (statistics.median(values) - statistics.median(before)) / 1e6
        total_ms = (
            statistics.median(win.total_by_op[key]) - statistics.median(base.total_by_op[key])
        ) / 1e6
        if abs(total_ms - change_ms) > abs(inherited_ms[key[0]]):
            inherited_ms[key[0]] = total_ms - change_ms
        if z > self_z[key[0]]:
            self_z[key[0]] = z
            self_ms[key[0]] = change_ms
            notes[key[0]].append(f"self time of {key[1]!r} {change_ms:+.1f} ms (z={z:.1f})")
    gap_z: dict[str, float] = defaultdict(float)
    gap_n: dict[str, int] = defaultdict(int)
    for edge, values in win.gaps.items():
        before = base.gaps.get(edge, [])
        if len(before) < min_samples or len(values) < min_samples:
            continue
        z = _robust_z(before, values, sampled_z)
        for service in edge:
            gap_n[service] += 1
        if z > 0:
            for service in edge:
                gap_z[service] += z
            if z >= 3:
                notes[edge[0]].append(f"call gap {edge[0]}->{edge[1]} z={z:.1f}")
                notes[edge[1]].append(f"call gap {edge[0]}->{edge[1]} z={z:.1f}")
    candidates = []
    for service in sorted(win.spans):
        origin = _origin_z(base, win, service)
        if win.origins.get(service, 0):
            notes[service].append(
                f"{win.origins[service]} error(s) originate here (z={origin:.1f})"
            )
        gap = gap_z[service] / max(gap_n[service], 1) if edge_gap == "mean" else gap_z[service]
        score = max(self_z[service], 0.0) + gap + max(origin, 0.0)
        candidates.append(
            Candidate(
                service=service,
                score=round(score, 3),
                self_time_z=round(self_z[service], 3),
                self_time_change_ms=round(self_ms[service], 3),
                inherited_change_ms=round(inherited_ms[service], 3),
                edge_gap_z=round(gap, 3),
                error_origin_z=round(origin, 3),
                error_origins=win.origins.get(service, 0),
                spans=win.spans[service],
                evidence=tuple(notes[service][-4:]),
            )
        )
    candidates.sort(key=lambda c: (-c.score, c.service))
    return candidates
