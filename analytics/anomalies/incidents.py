"""Grouping anomalies into incidents.

Without a service map, anomalies whose time spans overlap or nearly touch form one incident.
With one (`edges`: caller -> callee pairs), an anomaly also has to be near the incident in the
call graph: one of its services within `hops` calls (either direction) of a service the
incident already names. A fault spreads along calls (to its callers, their callers, ...) and
each step of the spread shows up as an anomaly of its own, so one fault's anomalies stay one
incident; an unrelated blip elsewhere in the mesh at the same time opens its own incident and
does not take over (or rename, or re-rank) the real one.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from analytics.anomalies.detectors import Anomaly

__all__ = ["Incident", "ServiceMap", "group_incidents"]


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


def group_incidents(
    anomalies: Sequence[Anomaly],
    *,
    gap_minutes: int = 2,
    edges: Iterable[tuple[str, str]] | None = None,
    hops: int = 2,
) -> list[Incident]:
    """Anomalies sorted by start join the earliest incident still open (its last anomaly ended
    at most `gap_minutes` before) that, given `edges`, reaches one of their services within
    `hops` calls; otherwise they begin a new incident (module docstring)."""
    if gap_minutes < 0:
        raise ValueError(f"gap_minutes must be >= 0, got {gap_minutes}")
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    gap = timedelta(minutes=gap_minutes)
    graph = ServiceMap(edges) if edges is not None else None
    groups: list[_Group] = []
    for a in sorted(anomalies, key=lambda a: (a.start, a.subject, a.signal)):
        services = set(a.services)
        home = next(
            (g for g in groups if a.start <= g.end + gap and (graph is None or services & g.reach)),
            None,
        )
        reach = set().union(*(graph.near(s, hops) for s in services)) if graph else set()
        if home is None:
            groups.append(_Group([a], a.end, reach))
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
    ]
