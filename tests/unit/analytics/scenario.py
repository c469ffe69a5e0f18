"""A constructed mesh for analytics tests: web -> api -> db through sidecars, db slow for a while.

Every trace has the sidecars' CLIENT spans (with `meshlens.upstream`) and the SERVER spans, so
both the per-minute aggregates and the raw spans hold the same calls.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import Span

T0 = datetime(2026, 2, 2, 10, 0, tzinfo=UTC)
MS = 1_000_000


def mesh_spans(
    minutes: int,
    *,
    slow_from: int,
    slow_minutes: int = 5,
    per_minute: int = 12,
    db_ms: int = 4,
    slow_db_ms: int = 120,
    failing: bool = False,
) -> list[Span]:
    """Traces every 5 s; db answers in `slow_db_ms` (and errors if `failing`) while slow."""
    spans: list[Span] = []
    base_ns = int(T0.timestamp()) * 1_000_000_000
    for minute in range(minutes):
        slow = slow_from <= minute < slow_from + slow_minutes
        for i in range(per_minute):
            n = minute * per_minute + i
            trace = f"{n + 1:032x}"
            start = base_ns + minute * 60_000 * MS + i * (60_000 // per_minute) * MS
            db = (slow_db_ms if slow else db_ms) + n % 3
            status = "Error" if slow and failing else "Unset"
            code = "500" if slow and failing else "200"
            ids = [f"{n:012x}{k:04x}" for k in range(4)]
            api_total = db + 6
            spans += [
                Span(
                    "web",
                    "GET",
                    trace,
                    ids[0],
                    start,
                    (api_total + 2) * MS,
                    kind="Client",
                    status=status,
                    attributes={
                        "meshlens.upstream": "api",
                        "meshlens.route": "home",
                        "http.response.status_code": code,
                    },
                ),
                Span(
                    "api",
                    "GET /home",
                    trace,
                    ids[1],
                    start + MS,
                    api_total * MS,
                    parent_span_id=ids[0],
                    status=status,
                ),
                Span(
                    "api",
                    "GET",
                    trace,
                    ids[2],
                    start + 2 * MS + 2 * MS,
                    (db + 1) * MS,
                    kind="Client",
                    parent_span_id=ids[1],
                    status=status,
                    attributes={
                        "meshlens.upstream": "db",
                        "meshlens.route": "query",
                        "http.response.status_code": code,
                    },
                ),
                Span(
                    "db",
                    "SELECT",
                    trace,
                    ids[3],
                    start + 4 * MS,
                    db * MS,
                    parent_span_id=ids[2],
                    status=status,
                ),
            ]
    return spans


def minute(i: int) -> datetime:
    return T0 + timedelta(minutes=i)
