"""The OTLP/JSON importer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analytics.importers import ImportFormatError, read_spans

REQUEST = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "lib", "version": "1.0"},
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "EEE19B7EC3C1B174",
                            "parentSpanId": "",
                            "name": "GET /",
                            "kind": 2,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "attributes": [
                                {"key": "http.response.status_code", "value": {"intValue": "503"}},
                                {"key": "retry", "value": {"boolValue": True}},
                            ],
                            "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                        }
                    ],
                }
            ],
        }
    ]
}


def test_a_request_becomes_spans_with_exporter_values(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(REQUEST))

    [span] = list(read_spans(path, "otlp-json"))

    assert span.trace_id == "5b8efff798038103d269b633813fc60c"
    assert (span.service, span.kind, span.status, span.status_message) == (
        "web",
        "Server",
        "Error",
        "boom",
    )
    assert span.duration_ns == 1_000_000_000
    assert span.attributes == {"http.response.status_code": "503", "retry": "true"}
    assert (span.scope_name, span.scope_version) == ("lib", "1.0")


def test_json_lines_with_a_broken_line_names_it(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(REQUEST) + "\n" + json.dumps(REQUEST) + "\n{not json\n")
    with pytest.raises(ImportFormatError, match=r"t\.jsonl:3: invalid JSON"):
        list(read_spans(path, "otlp-json"))


def test_json_nested_past_the_recursion_limit_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(REQUEST) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ImportFormatError, match=r"t\.jsonl:2: invalid JSON: nested too deeply"):
        list(read_spans(path, "otlp-json"))  # (a RecursionError traceback out of the CLI)


def test_a_document_without_resource_spans_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"data": []}')
    with pytest.raises(ImportFormatError, match="resourceSpans"):
        list(read_spans(path, "otlp-json"))


def test_bytes_that_are_not_utf8_name_their_line(tmp_path: Path) -> None:
    # (a bare UnicodeDecodeError before: no file, no line)
    path = tmp_path / "t.json"
    text = json.dumps(REQUEST, indent=1).encode()
    at = text.index(b"GET /")
    path.write_bytes(text[:at] + b"\xff" + text[at + 1 :])
    with pytest.raises(
        ImportFormatError, match=r"t\.json:\d+: not UTF-8 text \(byte 0xff\)"
    ) as info:
        list(read_spans(path, "otlp-json"))
    assert info.value.line == text[:at].count(b"\n") + 1


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc.update(resourceSpans=[5]),  # (an AttributeError escaped)
        lambda doc: doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(
            startTimeUnixNano=float("inf")  # (an OverflowError escaped)
        ),
        lambda doc: doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(
            startTimeUnixNano=str(2**63),
            endTimeUnixNano=str(2**63 + 5),  # past 2262
        ),
    ],
    ids=["not-an-object", "infinite-time", "time-past-the-store"],
)
def test_wrong_shapes_and_times_are_format_errors(tmp_path: Path, change: Any) -> None:
    doc = json.loads(json.dumps(REQUEST))
    change(doc)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ImportFormatError, match="bad span"):
        list(read_spans(path, "otlp-json"))
