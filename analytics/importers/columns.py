"""The importers' common span value, its otel_traces columns, and `import_file` into a store."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.otlp.traces import MAX_UNIX_NANO
from collector.store import Store

__all__ = [
    "FORMATS",
    "ImportFormatError",
    "ImportedSpan",
    "import_file",
    "read_spans",
    "to_columns",
]

_BATCH_ROWS = 50_000
MAX_START_NS = MAX_UNIX_NANO  # otel_traces.Timestamp is DateTime64(9): Int64 nanoseconds


class ImportFormatError(ValueError):
    """A trace file is malformed; the message names the file and, where known, the line."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ImportedSpan:
    """One span in otel_traces terms (kind `Server`/`Client`/`Internal`..., status `Ok`...)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    service: str
    name: str
    kind: str
    start_ns: int
    duration_ns: int
    status: str = "Unset"
    status_message: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    resource: dict[str, str] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""

    def __post_init__(self) -> None:
        if not self.trace_id or not self.span_id:
            raise ValueError("trace id and span id must not be empty")
        if self.duration_ns < 0:
            raise ValueError(f"duration must be >= 0, got {self.duration_ns} ns")
        if not 0 <= self.start_ns < MAX_START_NS or self.duration_ns >= 2**64:
            raise ValueError(
                f"start {self.start_ns} ns or duration {self.duration_ns} ns out of range "
                "(the store keeps starts from 1970 to 2262-04-11)"
            )


_COLUMNS = (
    "Timestamp TraceId SpanId ParentSpanId TraceState SpanName SpanKind ServiceName "
    "ResourceAttributes ScopeName ScopeVersion SpanAttributes Duration StatusCode "
    "StatusMessage Events.Timestamp Events.Name Events.Attributes Links.TraceId "
    "Links.SpanId Links.TraceState Links.Attributes"
).split()


def to_columns(spans: Iterable[ImportedSpan]) -> dict[str, list[Any]]:
    """The 22 otel_traces insert columns (exporter order) for `spans`."""
    cols: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    for s in spans:
        resource = s.resource or {"service.name": s.service}
        values: tuple[Any, ...] = (
            s.start_ns,
            s.trace_id,
            s.span_id,
            s.parent_span_id,
            "",
            s.name,
            s.kind,
            s.service,
            resource,
            s.scope_name,
            s.scope_version,
            s.attributes,
            s.duration_ns,
            s.status,
            s.status_message,
            [],
            [],
            [],
            [],
            [],
            [],
            [],
        )
        for column, value in zip(cols.values(), values, strict=True):
            column.append(value)
    return cols


def _readers() -> dict[str, Callable[[Path], Iterator[ImportedSpan]]]:
    from analytics.importers import csv_traces, jaeger_json, otlp_json

    return {
        "otlp-json": otlp_json.read,
        "jaeger-json": jaeger_json.read,
        "csv": csv_traces.read,
    }


FORMATS = ("otlp-json", "jaeger-json", "csv")


def read_spans(path: str | Path, fmt: str) -> Iterator[ImportedSpan]:
    """Parse `path` (plain or .gz) in format `fmt`; raises ImportFormatError on bad input."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    file = Path(path)
    if not file.is_file():
        raise ImportFormatError(file, None, "no such file")
    return _readers()[fmt](file)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:24]


def _next_batch(spans: Iterator[ImportedSpan]) -> list[ImportedSpan]:
    return list(itertools.islice(spans, _BATCH_ROWS))


async def import_file(store: Store, path: str | Path, fmt: str) -> int:
    """Insert every span of `path` into otel_traces in batches; returns the number of spans.

    Parsing runs in a worker thread. Each batch carries a dedup token derived from the file
    content, so importing the same file twice writes it once.
    """
    file = Path(path)
    spans = read_spans(file, fmt)
    digest = await asyncio.to_thread(_digest, file)
    total, batch_no = 0, 0
    while batch := await asyncio.to_thread(_next_batch, spans):
        token = f"import-{digest}-{batch_no}"
        total += await store.insert("otel_traces", to_columns(batch), dedup_token=token)
        batch_no += 1
    return total
