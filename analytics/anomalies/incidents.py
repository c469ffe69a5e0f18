"""Grouping anomalies into incidents: anomalies whose time spans overlap or nearly touch."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from analytics.anomalies.detectors import Anomaly

__all__ = ["Incident", "group_incidents"]


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


def _incident_id(first: Anomaly) -> str:
    key = f"{first.start.isoformat()}|{first.subject}|{first.signal}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def group_incidents(anomalies: Sequence[Anomaly], *, gap_minutes: int = 2) -> list[Incident]:
    """Anomalies sorted by start; a new incident begins after `gap_minutes` with none open."""
    if gap_minutes < 0:
        raise ValueError(f"gap_minutes must be >= 0, got {gap_minutes}")
    gap = timedelta(minutes=gap_minutes)
    groups: list[list[Anomaly]] = []
    end: datetime | None = None
    for a in sorted(anomalies, key=lambda a: (a.start, a.subject, a.signal)):
        if end is None or a.start > end + gap:
            groups.append([a])
            end = a.end
        else:
            groups[-1].append(a)
            end = max(end, a.end)
    return [
        Incident(_incident_id(g[0]), g[0].start, max(a.end for a in g), tuple(g)) for g in groups
    ]
