"""OTLP/JSON traces (ExportTraceServiceRequest): one JSON object per file, or one per line
(what the OpenTelemetry Collector's file exporter writes). Ids are hex, kinds and status codes
integers or their enum names, times decimal strings of ns (protobuf JSON mapping)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from analytics.importers._files import read_text
from analytics.importers.columns import ImportedSpan, ImportFormatError

__all__ = ["KINDS", "STATUSES", "any_value_text", "read"]

KINDS = {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer", 5: "Consumer"}
STATUSES = {0: "Unset", 1: "Ok", 2: "Error"}


def _enum(value: Any, table: Mapping[int, str], prefix: str) -> str:
    if isinstance(value, int) and value in table:
        return table[value]
    if isinstance(value, str):
        for name in table.values():
            if value.upper() in (name.upper(), f"{prefix}{name.upper()}"):
                return name
    raise ValueError(f"unknown enum value {value!r}")


def any_value_text(value: Mapping[str, Any]) -> str:
    """An OTLP AnyValue as the exporter stores it (ints decimal, bools true/false, else JSON)."""
    if "stringValue" in value:
        return str(value["stringValue"])
    if "boolValue" in value:
        return "true" if value["boolValue"] else "false"
    if "intValue" in value:
        return str(int(value["intValue"]))
    if "doubleValue" in value:
        return str(float(value["doubleValue"]))
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _attributes(items: Any) -> dict[str, str]:
    if not items:
        return {}
    return {str(kv["key"]): any_value_text(kv.get("value") or {}) for kv in items}


def _spans(request: Mapping[str, Any]) -> Iterator[ImportedSpan]:
    for resource_spans in request.get("resourceSpans") or []:
        resource = _attributes((resource_spans.get("resource") or {}).get("attributes"))
        service = resource.get("service.name", "")
        scopes = resource_spans.get("scopeSpans") or resource_spans.get(
            "instrumentationLibrarySpans"
        )
        for scope_spans in scopes or []:
            scope = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary") or {}
            for span in scope_spans.get("spans") or []:
                start = int(span["startTimeUnixNano"])
                status = span.get("status") or {}
                yield ImportedSpan(
                    trace_id=str(span["traceId"]).lower(),
                    span_id=str(span["spanId"]).lower(),
                    parent_span_id=str(span.get("parentSpanId") or "").lower(),
                    service=service,
                    name=str(span.get("name", "")),
                    kind=_enum(span.get("kind", 0), KINDS, "SPAN_KIND_"),
                    start_ns=start,
                    duration_ns=int(span.get("endTimeUnixNano", start)) - start,
                    status=_enum(status.get("code", 0), STATUSES, "STATUS_CODE_"),
                    status_message=str(status.get("message", "")),
                    attributes=_attributes(span.get("attributes")),
                    resource=resource,
                    scope_name=str(scope.get("name", "")),
                    scope_version=str(scope.get("version", "")),
                )


def read(path: Path) -> Iterator[ImportedSpan]:
    """Yield every span in the file; a malformed request names its line."""
    text = read_text(path)
    stripped = text.strip()
    if not stripped:
        raise ImportFormatError(path, 1, "empty file")
    try:
        documents: list[tuple[int, Any]] = [(1, json.loads(stripped))]
    except RecursionError:
        raise ImportFormatError(path, 1, "invalid JSON: nested too deeply") from None
    except json.JSONDecodeError:
        documents = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ImportFormatError(path, number, f"invalid JSON: {exc.msg}") from None
            except RecursionError:
                raise ImportFormatError(path, number, "invalid JSON: nested too deeply") from None
    for number, document in documents:
        if not isinstance(document, dict) or "resourceSpans" not in document:
            raise ImportFormatError(path, number, "expected an object with 'resourceSpans'")
        try:
            yield from list(_spans(document))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ImportFormatError(path, number, f"bad span: {exc!r}") from None
