"""The research-dataset CSV importer."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from analytics.importers import ImportFormatError, read_spans, to_columns
from analytics.importers.csv_traces import service_of_pod

HEADER = (
    "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n"
)
ROWS = (
    "t1,s1,root,ts-gateway-service-6f6cfc45b-h5m2n,/*,1000000000,1300000000,300000\n"
    "t1,s2,s1,ts-gateway-service-6f6cfc45b-h5m2n,HTTP POST,1010000000,1290000000,280000\n"
    "t1,s3,s2,ts-auth-service-7f8d7d756d-k7b9j,/api/v1/login,1020000000,1280000000,260000\n"
    "t1,s4,s3,ts-auth-service-7f8d7d756d-k7b9j,AuthController.login,1030000000,1270000000,240000\n"
)


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_spans_get_service_kind_parent_and_ns_times(tmp_path: Path) -> None:
    spans = list(read_spans(_write(tmp_path, HEADER + ROWS, "t.csv.gz"), "csv"))

    assert [(s.service, s.kind, s.parent_span_id) for s in spans] == [
        ("ts-gateway-service", "Server", ""),
        ("ts-gateway-service", "Client", "s1"),  # its child runs in another service
        ("ts-auth-service", "Server", "s2"),
        ("ts-auth-service", "Internal", "s3"),
    ]
    assert spans[0].start_ns == 1_000_000_000 and spans[0].duration_ns == 300_000_000
    assert spans[0].resource["k8s.pod.name"] == "ts-gateway-service-6f6cfc45b-h5m2n"
    columns = to_columns(spans)
    assert len(columns) == 22 and columns["ServiceName"][2] == "ts-auth-service"


def test_duration_in_microseconds_is_used_when_end_is_missing(tmp_path: Path) -> None:
    spans = list(read_spans(_write(tmp_path, HEADER + "t,s,root,a-b-c-d,op,1000,,250\n"), "csv"))
    assert spans[0].duration_ns == 250_000


def test_a_bad_number_names_the_line(tmp_path: Path) -> None:
    text = HEADER + ROWS + "t2,x1,root,pod-a-b,op,soon,2,1\n"
    with pytest.raises(ImportFormatError, match=r"t\.csv:6: StartTimeUnixNano is not a number"):
        list(read_spans(_write(tmp_path, text), "csv"))
    for infinite in ("1e400", "inf", "-Infinity"):  # (OverflowError out of int(inf) before)
        text = HEADER + ROWS + f"t2,x1,root,pod-a-b,op,{infinite},,1\n"
        with pytest.raises(ImportFormatError, match=r"t\.csv:6: StartTimeUnixNano is not a num"):
            list(read_spans(_write(tmp_path, text), "csv"))


def test_a_missing_column_and_a_short_line_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError, match=r"lacks column.*PodName"):
        list(read_spans(_write(tmp_path, "TraceID,SpanID,ParentID\n"), "csv"))
    with pytest.raises(ImportFormatError, match=r":2: expected 8 fields, got 3"):
        list(read_spans(_write(tmp_path, HEADER + "a,b,c\n"), "csv"))


def test_pod_names_lose_their_last_two_parts() -> None:
    assert service_of_pod("ts-auth-service-7f8d7d756d-k7b9j") == "ts-auth-service"
    assert service_of_pod("redis") == "redis"


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        read_spans(tmp_path / "x", "zipkin")
    with pytest.raises(ImportFormatError, match="no such file"):
        read_spans(tmp_path / "missing.csv", "csv")


def test_a_start_past_the_stores_range_and_a_non_utf8_byte_name_their_line(
    tmp_path: Path,
) -> None:
    late = ROWS.replace("1030000000,1270000000", f"{2**63},{2**63 + 5}")
    with pytest.raises(ImportFormatError, match=r":5: StartTimeUnixNano out of range"):
        list(read_spans(_write(tmp_path, HEADER + late), "csv"))
    path = tmp_path / "bad.csv"
    path.write_bytes((HEADER + ROWS).encode().replace(b"HTTP POST", b"HTTP \xffOST"))
    with pytest.raises(ImportFormatError, match=r"bad\.csv:\d+: not UTF-8 text"):
        list(read_spans(path, "csv"))


def test_a_broken_gzip_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress((HEADER + ROWS).encode())[:-12])  # truncated stream
    with pytest.raises(ImportFormatError, match="cannot read"):
        list(read_spans(path, "csv"))
