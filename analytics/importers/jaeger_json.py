"""Jaeger JSON traces, as the Jaeger UI downloads them and `/api/traces` returns them:
`{"data": [{"traceID", "spans": [...], "processes": {"p1": {"serviceName", "tags"}}}]}`.
Times are microseconds; the parent is the CHILD_OF reference; tags `span.kind`, `error`,
`otel.status_code` give kind and status."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from analytics.importers._files import read_text
from analytics.importers.columns import ImportedSpan, ImportFormatError

__all__ = ["read"]

_KINDS = {
    "server": "Server",
    "client": "Client",
    "producer": "Producer",
    "consumer": "Consumer",
    "internal": "Internal",
}


def _tags(items: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in items or []:
        value = tag.get("value")
        out[str(tag["key"])] = (
            ("true" if value else "false") if isinstance(value, bool) else str(value)
        )
    return out


def _pad(hex_id: str, width: int) -> str:
    return hex_id.lower().rjust(width, "0")


def _span(span: Mapping[str, Any], processes: Mapping[str, Any], trace_id: str) -> ImportedSpan:
    process = processes.get(span.get("processID", "")) or span.get("process") or {}
    tags = _tags(span.get("tags"))
    parent = ""
    for ref in span.get("references") or []:
        if ref.get("refType", "CHILD_OF") == "CHILD_OF":
            parent = _pad(str(ref["spanID"]), 16)
            break
    kind = _KINDS.get(tags.pop("span.kind", "").lower(), "Internal" if parent else "Server")
    status = "Error" if tags.get("error") == "true" else "Unset"
    code = tags.pop("otel.status_code", "").upper()
    status = {"ERROR": "Error", "OK": "Ok"}.get(code, status)
    start_ns = int(span["startTime"]) * 1000
    service = str(process.get("serviceName", ""))
    resource = {"service.name": service, **_tags(process.get("tags"))}
    return ImportedSpan(
        trace_id=_pad(str(span.get("traceID") or trace_id), 32),
        span_id=_pad(str(span["spanID"]), 16),
        parent_span_id=parent,
        service=service,
        name=str(span.get("operationName", "")),
        kind=kind,
        start_ns=start_ns,
        duration_ns=int(span.get("duration", 0)) * 1000,
        status=status,
        status_message=tags.pop("otel.status_description", ""),
        attributes=tags,
        resource=resource,
        scope_name="meshlens-import-jaeger",
    )


def read(path: Path) -> Iterator[ImportedSpan]:
    """Yield every span; a file of one trace object (no `data` wrapper) is accepted too."""
    text = read_text(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise ImportFormatError(path, 1, "invalid JSON: nested too deeply") from None
    traces = document.get("data") if isinstance(document, dict) else None
    if traces is None and isinstance(document, dict) and "spans" in document:
        traces = [document]
    if not isinstance(traces, list):
        raise ImportFormatError(path, 1, "expected {'data': [trace, ...]} (Jaeger JSON)")
    for number, trace in enumerate(traces):
        try:
            processes = trace.get("processes") or {}
            spans = [_span(s, processes, str(trace.get("traceID", ""))) for s in trace["spans"]]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ImportFormatError(path, None, f"trace #{number}: bad span: {exc!r}") from None
        yield from spans
