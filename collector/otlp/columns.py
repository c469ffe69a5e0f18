"""Column batches: what a decoded OTLP request becomes (one list per column, per table)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Batch", "Columns", "Consumer", "DecodedBatch", "Signal", "merge_tables"]

Columns = dict[str, list[Any]]


class Signal(enum.IntEnum):
    """The OTLP signal of a request; the value is the tag byte stored in the spool."""

    TRACES = 1
    METRICS = 2


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Rows for each table decoded from one request, plus what was rejected and why."""

    signal: Signal
    tables: dict[str, Columns]
    accepted: int
    rejected: int = 0
    error_message: str = ""
    rows: int = field(default=0)

    def __post_init__(self) -> None:
        if self.accepted < 0 or self.rejected < 0:
            raise ValueError("accepted and rejected must be >= 0")
        if self.rows == 0 and self.tables:
            total = sum(_height(cols) for cols in self.tables.values())
            object.__setattr__(self, "rows", total)


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows of spool records first_seq..last_seq, per table: the unit written to the store."""

    first_seq: int
    last_seq: int
    tables: dict[str, Columns]

    def __post_init__(self) -> None:
        if self.first_seq > self.last_seq:
            raise ValueError(f"empty sequence range {self.first_seq}..{self.last_seq}")


class Consumer(Protocol):
    """The stage after a receiver: takes a decoded request and its canonical protobuf bytes.

    Returns once the data is durable; raises Overloaded when it cannot take more now.
    """

    async def consume(self, payload: bytes, decoded: DecodedBatch) -> None: ...


def _height(columns: Columns) -> int:
    for values in columns.values():
        return len(values)
    return 0


def merge_tables(parts: Sequence[dict[str, Columns]]) -> dict[str, Columns]:
    """Concatenate per-table columns of several batches (same column sets per table)."""
    merged: dict[str, Columns] = {}
    for tables in parts:
        for table, columns in tables.items():
            target = merged.get(table)
            if target is None:
                merged[table] = {name: list(values) for name, values in columns.items()}
                continue
            for name, values in columns.items():
                target[name].extend(values)
    return merged
