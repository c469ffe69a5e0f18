"""Importers: trace files recorded elsewhere -> otel_traces rows (`meshlens import`).

Formats: `otlp-json` (OTLP/JSON ExportTraceServiceRequest, one object or one per line),
`jaeger-json` (the Jaeger query API's `{"data": [trace, ...]}`), `csv` (the research-dataset
layout TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration).
Bad input raises ImportFormatError naming the file and line.
"""

from __future__ import annotations

from analytics.importers.columns import (
    FORMATS,
    ImportedSpan,
    ImportFormatError,
    import_file,
    read_spans,
    to_columns,
)

__all__ = [
    "FORMATS",
    "ImportFormatError",
    "ImportedSpan",
    "import_file",
    "read_spans",
    "to_columns",
]
