"""CSV traces as published by research datasets (Nezha, Train-Ticket): one span per line.

Columns TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration
(Duration in microseconds; ParentID `root` or empty for a root span). The service is PodName
without its last two dash-separated parts (the ReplicaSet hash and pod suffix). There is no
status and no kind: a span is `Server` when its parent is absent or in another service, else
`Internal`; a span whose children run in another service is the caller side and becomes `Client`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from analytics.importers._files import open_text
from analytics.importers.columns import MAX_START_NS, ImportedSpan, ImportFormatError

__all__ = ["HEADER", "read", "service_of_pod"]

HEADER = (
    "TraceID",
    "SpanID",
    "ParentID",
    "PodName",
    "OperationName",
    "StartTimeUnixNano",
    "EndTimeUnixNano",
    "Duration",
)
_ROOT = frozenset({"", "root", "-1", "0"})


def service_of_pod(pod: str) -> str:
    """`ts-auth-service-7f8d7d756d-k7b9j` -> `ts-auth-service` (short names kept as they are)."""
    parts = pod.split("-")
    return "-".join(parts[:-2]) if len(parts) > 2 else pod


def _int(value: str, name: str, path: Path, line: int) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except (ValueError, OverflowError):  # (OverflowError: "1e400" or "inf" is infinity)
            raise ImportFormatError(path, line, f"{name} is not a number: {value!r}") from None


def _rows(
    path: Path, reader: Any, rows: list[tuple[str, str, str, str, str, str, int, int]]
) -> None:
    """Append the file's spans as (trace, span, parent, service, pod, op, start, duration)."""
    header = next(reader, None)
    if header is None:
        raise ImportFormatError(path, 1, "empty file (expected a header line)")
    missing = [name for name in HEADER if name not in header]
    if missing:
        raise ImportFormatError(path, 1, f"header lacks column(s) {', '.join(missing)}")
    index = [header.index(name) for name in HEADER]
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        if len(row) < len(header):
            raise ImportFormatError(path, line, f"expected {len(header)} fields, got {len(row)}")
        trace, span, parent, pod, op, start_s, end_s, dur_s = (row[i] for i in index)
        if not trace or not span:
            raise ImportFormatError(path, line, "TraceID and SpanID must not be empty")
        start = _int(start_s, "StartTimeUnixNano", path, line)
        if not 0 <= start < MAX_START_NS:
            raise ImportFormatError(path, line, "StartTimeUnixNano out of range")
        end = _int(end_s, "EndTimeUnixNano", path, line) if end_s else 0
        duration = end - start if end else _int(dur_s, "Duration", path, line) * 1000
        if duration < 0:
            raise ImportFormatError(path, line, "EndTimeUnixNano is before StartTimeUnixNano")
        parent = "" if parent in _ROOT else parent
        rows.append((trace, span, parent, service_of_pod(pod), pod, op, start, duration))


def read(path: Path) -> Iterator[ImportedSpan]:
    """Parse the whole file (kinds need every span of a trace), then yield its spans."""
    rows: list[tuple[str, str, str, str, str, str, int, int]] = []
    with open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            _rows(path, reader, rows)
        except UnicodeDecodeError:
            raise ImportFormatError(path, reader.line_num + 1, "not UTF-8 text") from None
        except (OSError, EOFError) as exc:  # (a broken .gz)
            raise ImportFormatError(path, None, f"cannot read: {exc}") from None
    service_of = {(r[0], r[1]): r[3] for r in rows}
    calls_out = {(r[0], r[2]) for r in rows if r[2] and service_of.get((r[0], r[2]), r[3]) != r[3]}
    for trace, span, parent, service, pod, op, start, duration in rows:
        parent_service = service_of.get((trace, parent)) if parent else None
        if parent_service is None or parent_service != service:
            kind = "Server"
        elif (trace, span) in calls_out:
            kind = "Client"
        else:
            kind = "Internal"
        yield ImportedSpan(
            trace_id=trace,
            span_id=span,
            parent_span_id=parent,
            service=service,
            name=op,
            kind=kind,
            start_ns=start,
            duration_ns=duration,
            resource={"service.name": service, "k8s.pod.name": pod},
            scope_name="meshlens-import-csv",
        )
