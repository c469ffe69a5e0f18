"""The live replay's capture of the engine's log records at the simulated clock."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.rca.live_detect import Found, Opened
from bench.rca.live_replay import _Capture, _first_log_time

T0 = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)


def test_engine_records_are_captured_at_the_simulated_time() -> None:
    clock = [T0.timestamp() + 42.0]
    capture = _Capture(clock)
    log = logging.getLogger("test.live_replay")
    log.addHandler(capture)
    log.setLevel(logging.INFO)
    try:
        log.info(
            "anomaly found",
            extra={
                "subject": "frontend->catalog",
                "signal": "error_ratio",
                "start": T0.isoformat(),
            },
        )
        clock[0] += 5.0
        log.info(
            "incident opened",
            extra={
                "incident": "abc",
                "start": T0.isoformat(),
                "services": ["catalog", "frontend"],
                "signals": ["error_ratio"],
                "root_causes": ["catalog"],
            },
        )
        log.info("something else", extra={"start": "not a time"})
    finally:
        log.removeHandler(capture)
    start = T0.timestamp()
    assert capture.found == [Found(start + 42.0, start, "frontend->catalog", "error_ratio")]
    assert capture.opened == [Opened(start + 47.0, start, ("catalog", "frontend"), ("catalog",))]


def test_the_replay_starts_at_the_first_json_line_of_up_log(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    log.write_text(
        'operator token: x\n{"ts": "2026-11-26T13:00:08.500Z", "msg": "a"}\n'
        '{"ts": "2026-11-26T14:00:00Z"}\n'
    )
    assert _first_log_time(log) == T0.timestamp() + 8.5
    log.write_text("no json here\n")
    with pytest.raises(ValueError, match="no JSON log line"):
        _first_log_time(log)
