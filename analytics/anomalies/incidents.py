"""Grouping anomalies into incidents.

Without a service map, anomalies whose time spans overlap or nearly touch form one incident.
With one (`edges`: caller -> callee pairs), an anomaly also has to be near the incident in the
call graph: one of its services within `hops` calls (either direction) of a service the
incident already names. A fault spreads along calls (to its callers, their callers, ...) and
each step of the spread shows up as an anomaly of its own, so one fault's anomalies stay one
incident; an unrelated blip elsewhere in the mesh at the same time opens its own incident and
does not take over (or rename, or re-rank) the real one.

With `tail_min`, a short tail-only anomaly (a `latency_p99` run shorter than `tail_min`) is
context, not evidence: it never opens an incident and no stronger anomaly joins a group of such
anomalies alone; it joins an incident opened by a stronger signal (errors, the median, the rate,
a burn rate, a stopped replica, a tail rise that has lasted `tail_min`) within reach. A 5 s
bucket's p99 is its slowest request or two: a host stall moves it for tens of seconds, and a
fault that every request or many requests pay moves a stronger signal too. Were such a rise to
open the incident, the fault that follows it in the same neighbourhood would join it and the
incident would start (and be ranked) before the fault.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from analytics.anomalies.detectors import Anomaly

__all__ = ["Incident", "ServiceMap", "group_incidents", "opens_incident"]


@dataclass(frozen=True, slots=True)
class Incident:
    """A group of anomalies; `id` is stable for the same first anomaly (re-analysis updates it)."""

    id: str
    start: datetime
    end: datetime
    anomalies: tuple[Anomaly, ...]

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(sorted({s for a in self.anomalies for s in a.services}))

    @property
    def summary(self) -> str:
        signals = sorted({a.signal for a in self.anomalies})
        return (
            f"{len(self.anomalies)} anomalies ({', '.join(signals)}) on {', '.join(self.services)}"
        )


class ServiceMap:
    """Undirected call-graph distances between services (from caller -> callee pairs)."""

    def __init__(self, edges: Iterable[tuple[str, str]]) -> None:
        self._next: dict[str, set[str]] = defaultdict(set)
        for caller, callee in edges:
            if caller != callee:
                self._next[caller].add(callee)
                self._next[callee].add(caller)

    def near(self, service: str, hops: int) -> set[str]:
        """`service` and every service within `hops` calls of it."""
        seen, frontier = {service}, {service}
        for _ in range(hops):
            frontier = {n for s in frontier for n in self._next.get(s, ())} - seen
            seen |= frontier
        return seen


def _incident_id(first: Anomaly) -> str:
    key = f"{first.start.isoformat()}|{first.subject}|{first.signal}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(slots=True)
class _Group:
    anomalies: list[Anomaly]
    end: datetime
    reach: set[str]  # services within `hops` of one the group names
    opened: bool  # holds an anomaly that may open an incident


def opens_incident(anomaly: Anomaly, tail_min: timedelta) -> bool:
    """Whether `anomaly` may open an incident: any signal but a tail-only latency rise
    (`latency_p99`) that has lasted less than `tail_min` (module docstring)."""
    return anomaly.signal != "latency_p99" or anomaly.end - anomaly.start >= tail_min


def group_incidents(
    anomalies: Sequence[Anomaly],
    *,
    gap_minutes: int = 2,
    edges: Iterable[tuple[str, str]] | None = None,
    hops: int = 2,
    tail_min: timedelta = timedelta(0),
) -> list[Incident]:
    """Anomalies sorted by start join the earliest incident still open (its last anomaly ended
    at most `gap_minutes` before) that, given `edges`, reaches one of their services within
    `hops` calls; otherwise they begin a new incident (module docstring). With `tail_min`, an
    anomaly that may open an incident (`opens_incident`) joins only a group that holds one
    such already, and groups without one are no incidents."""
    if gap_minutes < 0:
        raise ValueError(f"gap_minutes must be >= 0, got {gap_minutes}")
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    if tail_min < timedelta(0):
        raise ValueError(f"tail_min must be >= 0, got {tail_min}")
    gap = timedelta(minutes=gap_minutes)
    graph = ServiceMap(edges) if edges is not None else None
    groups: list[_Group] = []
    for a in sorted(anomalies, key=lambda a: (a.start, a.subject, a.signal)):
        services = set(a.services)
        opens = opens_incident(a, tail_min)
        home = next(
            (
                g
                for g in groups
                if a.start <= g.end + gap
                and (graph is None or services & g.reach)
                and (g.opened or not opens)
            ),
            None,
        )
        reach = set().union(*(graph.near(s, hops) for s in services)) if graph else set()
        if home is None:
            groups.append(_Group([a], a.end, reach, opens))
        else:
            home.anomalies.append(a)
            home.end = max(home.end, a.end)
            home.reach |= reach
    return [
        Incident(
            _incident_id(g.anomalies[0]),
            g.anomalies[0].start,
            max(a.end for a in g.anomalies),
            tuple(g.anomalies),
        )
        for g in groups
        if g.opened
    ]
