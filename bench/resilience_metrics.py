"""Measurements of the resilience benchmark (bench/resilience.py): goodput in 1-s buckets,
recovery time, and retry amplification from the sidecars' stored CLIENT spans.

Pure functions over recorded journeys and span rows, so they are unit tested
(tests/unit/bench/test_resilience.py); `read_attempts` reads the rows from a stopped
`meshlens up`'s embedded store.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from collector.store import open_store

__all__ = [
    "LOCAL_REFUSALS",
    "Amplification",
    "SpanAttempt",
    "amplification",
    "goodput_buckets",
    "read_attempts",
    "recovery_s",
]

# error.type of attempts the caller's sidecar refused to send (breaker, no endpoint, open circuit)
LOCAL_REFUSALS = frozenset({"overflow", "no_healthy_upstream", "circuit_open"})
# one journey sample: (end time s, latency s, ok)
Sample = tuple[float, float, bool]


def goodput_buckets(samples: Iterable[Sample], t0: float, t1: float) -> list[int]:
    """Successful journeys per whole second of [t0, t1), by the second each one *started* in
    (the load is open-loop at a fixed rate, so every bucket is offered the same number of
    journeys and latency jitter cannot move a success into a neighbouring bucket); a trailing
    part of a second is left out."""
    n = max(0, int(t1 - t0 + 1e-6))
    out = [0] * n
    for end, latency, ok in samples:
        start = end - latency
        if ok and t0 <= start < t0 + n:
            out[int(start - t0)] += 1
    return out


def recovery_s(buckets: Sequence[int], pre: float, *, share: float = 0.95) -> float | None:
    """First second k (0 = the first second after the fault ended) from which goodput stays
    >= `share` x `pre` up to the end of `buckets`; None when it never does (or pre is 0).

    Each second is judged on the mean of its 3-s window (itself and both neighbours; 2 s at
    the ends): at 7 journeys/s one failed journey is 14 % of a second, 5 % of three."""
    if pre <= 0 or not buckets:
        return None
    floor = share * pre
    n = len(buckets)
    first: int | None = None
    for k in range(n):
        window = buckets[max(0, k - 1) : k + 2]
        if sum(window) / len(window) >= floor:
            first = k if first is None else first
        else:
            first = None
    return None if first is None else float(first)


@dataclass(frozen=True, slots=True)
class SpanAttempt:
    """One sidecar CLIENT span (one attempt of one call of caller -> upstream)."""

    caller: str
    upstream: str
    trace_id: str
    parent_id: str
    attempt: int
    error_type: str
    start_s: float

    @property
    def sent(self) -> bool:
        return self.error_type not in LOCAL_REFUSALS


@dataclass(frozen=True, slots=True)
class Amplification:
    """Attempts sent upstream / logical calls, per hop; and attempts sent to the leaf per
    journey (every journey of the chain topology calls the leaf exactly once)."""

    per_hop: dict[tuple[str, str], tuple[int, int]]  # (caller, upstream) -> (sent, calls)
    leaf_sent: int
    journeys: int

    def hop(self, caller: str, upstream: str) -> float:
        sent, calls = self.per_hop.get((caller, upstream), (0, 0))
        return sent / calls if calls else math.nan

    @property
    def all_hops(self) -> float:
        sent = sum(s for s, _ in self.per_hop.values())
        calls = sum(c for _, c in self.per_hop.values())
        return sent / calls if calls else math.nan

    @property
    def worst_hop(self) -> float:
        ratios = [s / c for s, c in self.per_hop.values() if c]
        return max(ratios) if ratios else math.nan

    @property
    def end_to_end(self) -> float:
        return self.leaf_sent / self.journeys if self.journeys else math.nan


def amplification(attempts: Iterable[SpanAttempt], leaf: str, journeys: int) -> Amplification:
    """Per hop: attempts the caller's sidecar sent / distinct calls (trace, parent span);
    end to end: attempts sent to `leaf` / `journeys` started in the same window."""
    calls: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    sent: dict[tuple[str, str], int] = defaultdict(int)
    leaf_sent = 0
    for a in attempts:
        hop = (a.caller, a.upstream)
        calls[hop].add((a.trace_id, a.parent_id))
        if a.sent:
            sent[hop] += 1
            leaf_sent += a.upstream == leaf
    per_hop = {hop: (sent[hop], len(ids)) for hop, ids in sorted(calls.items())}
    return Amplification(per_hop, leaf_sent, journeys)


_ATTEMPTS_SQL = """
SELECT ServiceName AS caller, SpanAttributes['meshlens.upstream'] AS upstream,
       TraceId AS trace_id, ParentSpanId AS parent_id,
       toUInt32OrZero(SpanAttributes['meshlens.attempt']) AS attempt,
       SpanAttributes['error.type'] AS error_type,
       toUnixTimestamp64Nano(Timestamp) AS start_ns
FROM otel_traces
WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
  AND ScopeName = 'meshlens.sidecar'
  AND SpanKind IN ('Client', 'SPAN_KIND_CLIENT')
  AND SpanAttributes['meshlens.upstream'] != ''
  AND SpanAttributes['meshlens.attempt'] != ''
"""


async def read_attempts(store_dir: Path, start_s: float, end_s: float) -> list[SpanAttempt]:
    """The sidecar attempt spans started in [start_s, end_s) (unix s) of a stopped
    `meshlens up`'s embedded store."""
    store = open_store(f"chdb://{store_dir}")
    try:
        params = {
            "start": datetime.fromtimestamp(start_s, UTC),
            "end": datetime.fromtimestamp(end_s, UTC),
        }
        rows = await store.query(_ATTEMPTS_SQL, params)
    finally:
        await store.close()
    return [
        SpanAttempt(
            str(r["caller"]),
            str(r["upstream"]),
            str(r["trace_id"]),
            str(r["parent_id"]),
            int(r["attempt"]),
            str(r["error_type"]),
            int(r["start_ns"]) / 1e9,
        )
        for r in rows
    ]
