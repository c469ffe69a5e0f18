"""`meshlens import` and `meshlens analyze` as processes on an embedded store in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADER = "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration"
T0_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z


def _meshlens(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshlens_cli", "--log-level", "WARNING", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _csv(path: Path, minutes: int, slow_from: int) -> None:
    """front -> (client span) -> pay, 10 traces a minute; pay slow from `slow_from` on."""
    lines = [HEADER]
    for n in range(minutes * 10):
        start = T0_NS + n * 6_000_000_000
        pay_ms = (90 if n // 10 >= slow_from else 3) + n % 3
        trace = f"{n + 1:032x}"
        spans = [
            ("a", "root", "front-5d9c-x1", "GET /checkout", 0, pay_ms + 6),
            ("b", "a", "front-5d9c-x1", "HTTP POST", 1, pay_ms + 3),
            ("c", "b", "pay-7f8d-k7b9j", "/pay", 2, pay_ms),
        ]
        for sid, parent, pod, op, offset_ms, dur_ms in spans:
            begin = start + offset_ms * 1_000_000
            parent_id = parent if parent == "root" else f"{n:015x}{parent}"
            lines.append(
                f"{trace},{n:015x}{sid},{parent_id},{pod},{op},{begin},"
                f"{begin + dur_ms * 1_000_000},{dur_ms * 1000}"
            )
    path.write_text("\n".join(lines) + "\n")


def test_imported_csv_is_mapped_and_analyzed(tmp_path: Path) -> None:
    traces = tmp_path / "traces.csv"
    _csv(traces, minutes=40, slow_from=35)
    data = str(tmp_path / "data")

    imported = _meshlens("import", str(traces), "--format", "csv", "--data", data)
    again = _meshlens("import", str(traces), "--format", "csv", "--data", data)
    analyzed = _meshlens(
        "analyze",
        "--from",
        "2026-01-01T00:30:00Z",
        "--to",
        "2026-01-01T00:40:00Z",
        "--data",
        data,
        "--json",
    )

    assert imported.returncode == 0, imported.stderr
    assert "1200 spans imported" in imported.stdout
    assert again.returncode == 0
    assert analyzed.returncode == 0, analyzed.stderr
    incidents = json.loads(analyzed.stdout)
    assert len(incidents) == 1
    assert incidents[0]["start"].startswith("2026-01-01 00:35")
    assert "front->pay" in {a["subject"] for a in incidents[0]["anomalies"]}
    assert incidents[0]["root_causes"][0]["service"] == "pay"
    text = _meshlens(
        "analyze", "--from", "2026-01-01T00:30:00Z", "--to", "2026-01-01T00:40:00Z", "--data", data
    )
    assert "1 incident(s)" in text.stdout
    assert "#1 pay" in text.stdout


def test_a_bad_file_fails_with_the_line_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\nt,s,root,pod-a-b,op,1,2,1\nt,s2,s,pod-a-b,op,later,3,1\n")

    result = _meshlens("import", str(bad), "--format", "csv", "--data", str(tmp_path / "d"))

    assert result.returncode == 1
    assert f"{bad}:3: StartTimeUnixNano is not a number" in result.stderr
