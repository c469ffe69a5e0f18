"""The JSON access log writes one parseable line per record, to a file or a stream."""

from __future__ import annotations

import io
import json
from pathlib import Path

from sidecar.telemetry.accesslog import AccessLog, AccessRecord


def _record() -> AccessRecord:
    return AccessRecord(
        start_ns=1_700_000_000_123_456_789, direction="outbound", method="GET",
        authority="orders", path="/x", status=200, response_flags="-", duration_ms=1.23456,
        request_bytes=0, response_bytes=5, upstream="orders", route="r", endpoint="10.0.0.1:80",
        attempts=1, trace_id="ab" * 16, span_id="", request_id="rid", peer_identity="",
        user_agent="curl", error="",
    )  # fmt: skip


def test_file_log_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog.open(str(path))
    log.write(_record())
    log.write(_record())
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    entry = json.loads(lines[0])
    assert entry["ts"] == "2023-11-14T22:13:20.123456Z"
    assert entry["duration_ms"] == 1.235 and entry["trace_id"] == "ab" * 16


class FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


def test_write_failure_is_counted_not_raised() -> None:
    log = AccessLog(FullDisk())
    log.write(_record())
    log.write(_record())
    assert log.errors == 2


def test_a_full_disk_at_flush_is_counted_not_raised() -> None:
    # /dev/full: writes into the 64 KiB buffer succeed, the flush gets ENOSPC (before, flush
    # raised, and the telemetry housekeeping task that flushes every interval ended for good)
    log = AccessLog.open("/dev/full")
    log.write(_record())
    log.flush()
    log.write(_record())
    log.close()
    assert log.errors == 2
