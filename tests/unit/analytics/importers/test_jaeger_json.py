"""The Jaeger JSON importer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analytics.importers import ImportFormatError, read_spans

TRACE = {
    "data": [
        {
            "traceID": "abc",
            "spans": [
                {
                    "traceID": "abc",
                    "spanID": "1",
                    "operationName": "GET /",
                    "references": [],
                    "startTime": 1000,
                    "duration": 500,
                    "processID": "p1",
                    "tags": [{"key": "span.kind", "value": "server"}],
                },
                {
                    "traceID": "abc",
                    "spanID": "2",
                    "operationName": "query",
                    "references": [{"refType": "CHILD_OF", "traceID": "abc", "spanID": "1"}],
                    "startTime": 1100,
                    "duration": 200,
                    "processID": "p2",
                    "tags": [
                        {"key": "span.kind", "value": "client"},
                        {"key": "error", "value": True},
                    ],
                },
            ],
            "processes": {
                "p1": {"serviceName": "web", "tags": []},
                "p2": {"serviceName": "db", "tags": [{"key": "host", "value": "h1"}]},
            },
        }
    ]
}


def test_jaeger_spans_map_to_otel_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(TRACE))

    web, db = list(read_spans(path, "jaeger-json"))

    assert web.trace_id == "abc".rjust(32, "0") and web.kind == "Server"
    assert (db.service, db.kind, db.status, db.parent_span_id) == (
        "db",
        "Client",
        "Error",
        "1".rjust(16, "0"),
    )
    assert (db.start_ns, db.duration_ns) == (1_100_000, 200_000)
    assert db.resource == {"service.name": "db", "host": "h1"}


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{\n"data": [\n,]}')
    with pytest.raises(ImportFormatError, match=r"t\.json:3: invalid JSON"):
        list(read_spans(path, "jaeger-json"))
    path.write_text("[" * 100_000 + "]" * 100_000)  # (RecursionError went out of the CLI)
    with pytest.raises(ImportFormatError, match="invalid JSON: nested too deeply"):
        list(read_spans(path, "jaeger-json"))


def test_a_span_without_id_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"data": [{"spans": [{"startTime": 1}]}]}))
    with pytest.raises(ImportFormatError, match="trace #0: bad span"):
        list(read_spans(path, "jaeger-json"))


@pytest.mark.parametrize(
    "start", [1e400, 2**63 // 1000 + 1], ids=["infinite (OverflowError escaped)", "past 2262"]
)
def test_a_start_time_the_store_cannot_hold_is_a_format_error(tmp_path: Path, start: float) -> None:
    doc = json.loads(json.dumps(TRACE))
    doc["data"][0]["spans"][1]["startTime"] = start
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ImportFormatError, match="trace #0: bad span"):
        list(read_spans(path, "jaeger-json"))
