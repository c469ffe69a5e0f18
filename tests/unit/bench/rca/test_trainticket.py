"""The Train-Ticket bench's log reading on a constructed Nezha-format log file."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

from bench.rca.trainticket import logged_errors

_HEADER = ["Timestamp", "TimeUnixNano", "Node", "PodName", "Container", "TraceID", "SpanID", "Log"]


def _line(level: str, text: str) -> str:
    return json.dumps({"log": f"17:25:05.372 {level}  v.c.Some#54 TraceID: t SpanID: s {text}\n"})


def test_error_and_fatal_lines_name_their_spans(tmp_path: Path) -> None:
    path = tmp_path / "case00_08_43_log.csv.gz"
    rows = [
        ("t1", "s1", _line("ERROR", "[verify][Code not found]")),
        ("t1", "s2", _line("INFO", "an ERROR word later in an info line")),
        ("t2", "s3", _line("WARN", "slow")),
        ("t3", "s4", _line("FATAL", "down")),
        ("", "", _line("ERROR", "no trace")),
    ]
    with gzip.open(path, "wt", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(_HEADER)
        for trace, span, log in rows:
            writer.writerow(
                ["2023-01-29T09:25:05Z", "1", "n", "ts-a-1-x", "server", trace, span, log]
            )

    assert logged_errors(path) == {("t1", "s1"), ("t3", "s4")}
