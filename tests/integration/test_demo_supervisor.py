"""demo.supervisor.Child with real child processes: ready lines, early exits, stop escalation."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from demo.supervisor import Child


def _python(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", code]


async def test_ready_line_is_matched_and_output_is_logged(tmp_path: Path) -> None:
    child = Child(
        "c", _python("import time; print('noise'); print('x ready on 42'); time.sleep(30)"),
        tmp_path / "logs" / "c.log", r"ready on (\d+)",
    )  # fmt: skip
    await child.start()
    match = await child.wait_ready(timeout_s=20)
    assert match.group(1) == "42"
    await child.stop(timeout_s=5)
    assert not child.running
    assert child.proc is not None and child.proc.returncode == -signal.SIGTERM
    assert (tmp_path / "logs" / "c.log").read_text() == "noise\nx ready on 42\n"


async def test_a_child_that_exits_before_ready_fails_with_its_output(tmp_path: Path) -> None:
    child = Child(
        "bad", _python("print('cannot bind'); raise SystemExit(3)"), tmp_path / "b.log", "ready"
    )
    await child.start()
    with pytest.raises(RuntimeError, match=r"(?s)bad did not become ready.*cannot bind"):
        await child.wait_ready(timeout_s=20)


async def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    child = Child("stubborn", _python(code), tmp_path / "s.log", "ready")
    await child.start()
    await child.wait_ready(timeout_s=20)
    await child.stop(timeout_s=0.5)
    assert child.proc is not None and child.proc.returncode == -signal.SIGKILL


async def test_a_killed_child_can_be_started_again(tmp_path: Path) -> None:
    child = Child(
        "again", _python("import time; print('ready'); time.sleep(60)"), tmp_path / "a.log", "ready"
    )
    await child.start()
    await child.wait_ready(timeout_s=20)
    await child.kill()
    assert not child.running
    await child.start()
    await child.wait_ready(timeout_s=20)
    assert child.running
    await child.stop(timeout_s=5)
    assert (tmp_path / "a.log").read_text() == "ready\nready\n"
