"""Tables of the tuning loop (`meshlens_suggestions`, `meshlens_policy_pins`, created
idempotently) and the read of sidecar attempt spans from otel_traces.

Both tables are ReplacingMergeTree on a microsecond revision: each state change writes the whole
row again and reads use FINAL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from analytics.tuning.stats import Attempt, EdgeKey
from collector.store import Store

__all__ = [
    "PINS",
    "SCOPE",
    "SUGGESTIONS",
    "Pin",
    "SuggestionRecord",
    "TuningRepository",
]

SUGGESTIONS = "meshlens_suggestions"
PINS = "meshlens_policy_pins"
SCOPE = "meshlens.sidecar"  # ScopeName of the sidecar's own spans (not the apps' SDK spans)
MAX_ATTEMPTS = 500_000

_DDL = (
    f"""
CREATE TABLE IF NOT EXISTS {SUGGESTIONS} (
    id String,
    fingerprint String,
    kind LowCardinality(String),
    caller LowCardinality(String),
    upstream LowCardinality(String),
    route String,
    target LowCardinality(String),
    state LowCardinality(String),
    mode LowCardinality(String),
    summary String,
    change String,
    evidence String,
    confidence Float64,
    window_start Float64,
    window_end Float64,
    created_at Float64,
    updated_at Float64,
    rolled_out_at Float64,
    policy_version UInt32,
    previous_version UInt32,
    history String,
    verification String,
    revision UInt64
) ENGINE = ReplacingMergeTree(revision)
ORDER BY id
""",
    f"""
CREATE TABLE IF NOT EXISTS {PINS} (
    service String,
    pinned UInt8,
    actor String,
    reason String,
    updated_at Float64,
    revision UInt64
) ENGINE = ReplacingMergeTree(revision)
ORDER BY service
""",
)

_JSON = ("change", "evidence", "history", "verification")


@dataclass(frozen=True, slots=True)
class SuggestionRecord:
    """One stored suggestion with its lifecycle state (times are unix seconds)."""

    id: str
    fingerprint: str
    kind: str
    caller: str
    upstream: str
    route: str
    target: str
    state: str
    summary: str
    change: dict[str, Any]
    evidence: dict[str, Any]
    confidence: float
    window_start: float
    window_end: float
    created_at: float
    updated_at: float
    mode: str = ""
    rolled_out_at: float = 0.0
    policy_version: int = 0
    previous_version: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    verification: dict[str, Any] = field(default_factory=dict)

    @property
    def edge(self) -> EdgeKey:
        return EdgeKey(self.caller, self.upstream, self.route)

    def record(self) -> dict[str, Any]:
        """The JSON-ready API shape."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("window_start", "window_end", "created_at", "updated_at", "rolled_out_at"):
            value = out[name]
            out[name] = datetime.fromtimestamp(value, UTC).isoformat() if value else None
        return out


@dataclass(frozen=True, slots=True)
class Pin:
    service: str
    pinned: bool
    actor: str
    reason: str
    updated_at: float


_ATTEMPTS = """
SELECT ServiceName AS caller, SpanAttributes['meshlens.upstream'] AS upstream,
       SpanAttributes['meshlens.route'] AS route, TraceId AS trace_id,
       ParentSpanId AS parent_id, toUnixTimestamp64Nano(Timestamp) AS start_ns,
       Duration AS duration_ns, SpanAttributes['http.request.method'] AS method,
       concat(SpanAttributes['server.address'], ':', SpanAttributes['server.port']) AS endpoint,
       toUInt32OrZero(SpanAttributes['meshlens.attempt']) AS attempt,
       toUInt16OrZero(SpanAttributes['http.response.status_code']) AS status,
       SpanAttributes['error.type'] AS error_type
FROM otel_traces
WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
  AND ScopeName = {scope:String}
  AND SpanKind IN ('Client', 'SPAN_KIND_CLIENT')
  AND SpanAttributes['meshlens.upstream'] != ''
  AND SpanAttributes['meshlens.attempt'] != ''
  AND ({caller:String} = '' OR ServiceName = {caller:String})
  AND ({upstream:String} = '' OR SpanAttributes['meshlens.upstream'] = {upstream:String})
ORDER BY Timestamp
LIMIT {limit:UInt64}
"""


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class TuningRepository:
    """Suggestions, pins and attempt spans in one store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def ensure_tables(self) -> None:
        for ddl in _DDL:
            await self._store.command(ddl)

    async def attempts(
        self,
        start: float,
        end: float,
        *,
        caller: str = "",
        upstream: str = "",
        limit: int = MAX_ATTEMPTS,
    ) -> list[Attempt]:
        """Sidecar attempt spans of [start, end) (unix seconds), oldest first."""
        rows = await self._store.query(
            _ATTEMPTS,
            {
                "start": _ts(start),
                "end": _ts(end),
                "scope": SCOPE,
                "caller": caller,
                "upstream": upstream,
                "limit": limit,
            },
        )
        return [
            Attempt(
                edge=EdgeKey(r["caller"], r["upstream"], r["route"]),
                trace_id=r["trace_id"],
                parent_id=r["parent_id"],
                start_s=int(r["start_ns"]) / 1e9,
                duration_ms=int(r["duration_ns"]) / 1e6,
                method=r["method"] or "GET",
                endpoint=r["endpoint"],
                attempt=int(r["attempt"]) or 1,
                status=int(r["status"]),
                error_type=r["error_type"],
            )
            for r in rows
        ]

    async def save(self, records: Sequence[SuggestionRecord]) -> None:
        if not records:
            return
        names = list(SuggestionRecord.__dataclass_fields__)
        cols: dict[str, list[Any]] = {n: [] for n in [*names, "revision"]}
        for rec in records:
            for n in names:
                value = getattr(rec, n)
                cols[n].append(json.dumps(value, default=str) if n in _JSON else value)
            cols["revision"].append(int(rec.updated_at * 1_000_000))
        await self._store.insert(SUGGESTIONS, cols)

    async def suggestions(
        self, *, state: str = "", caller: str = "", limit: int = 500
    ) -> list[SuggestionRecord]:
        rows = await self._store.query(
            f"SELECT * FROM {SUGGESTIONS} FINAL WHERE ({{state:String}} = '' OR state = "
            "{state:String}) AND ({caller:String} = '' OR caller = {caller:String}) "
            "ORDER BY updated_at DESC, id LIMIT {limit:UInt32}",
            {"state": state, "caller": caller, "limit": limit},
        )
        return [_decode(r) for r in rows]

    async def get(self, suggestion_id: str) -> SuggestionRecord | None:
        rows = await self._store.query(
            f"SELECT * FROM {SUGGESTIONS} FINAL WHERE id = {{id:String}}", {"id": suggestion_id}
        )
        return _decode(rows[0]) if rows else None

    async def set_pin(self, pin: Pin) -> None:
        await self._store.insert(
            PINS,
            {
                "service": [pin.service],
                "pinned": [int(pin.pinned)],
                "actor": [pin.actor],
                "reason": [pin.reason],
                "updated_at": [pin.updated_at],
                "revision": [int(pin.updated_at * 1_000_000)],
            },
        )

    async def pins(self) -> dict[str, Pin]:
        """Services an operator pinned (tuning never proposes changes to them)."""
        rows = await self._store.query(f"SELECT * FROM {PINS} FINAL WHERE pinned = 1")
        return {
            r["service"]: Pin(r["service"], True, r["actor"], r["reason"], float(r["updated_at"]))
            for r in rows
        }


def _decode(row: dict[str, Any]) -> SuggestionRecord:
    values = {n: row[n] for n in SuggestionRecord.__dataclass_fields__}
    for n in _JSON:
        values[n] = json.loads(values[n]) if values[n] else ({} if n != "history" else [])
    for n in ("policy_version", "previous_version"):
        values[n] = int(values[n])
    return SuggestionRecord(**values)
