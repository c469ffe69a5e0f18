"""Recorder.later: an exchange's telemetry recorded after its response is written, in order, at
once without a loop, never lost to one failing record, and flushed before it is read."""

from __future__ import annotations

import asyncio

from sidecar.telemetry import Telemetry, TelemetryConfig
from sidecar.telemetry.recorder import Deferred, Recorder


class Note(Deferred):
    """Appends its name to a shared list when recorded (or raises, when told to)."""

    def __init__(self, name: str, seen: list[str], fail: bool = False) -> None:
        self.name, self.seen, self.fail = name, seen, fail

    def record(self, rec: Recorder) -> None:
        if self.fail:
            raise RuntimeError("broken record")
        self.seen.append(self.name)


def recorder() -> Recorder:
    return Telemetry(TelemetryConfig(service="checkout")).recorder


def test_without_a_loop_each_entry_is_recorded_at_once() -> None:
    rec, seen = recorder(), list[str]()
    rec.later(Note("a", seen))
    assert seen == ["a"] and rec.pending == []


async def test_with_a_loop_entries_wait_for_the_next_round_of_callbacks_in_order() -> None:
    rec, seen = recorder(), list[str]()
    rec.defer_to(asyncio.get_running_loop())
    rec.later(Note("a", seen))
    rec.later(Note("b", seen))
    assert seen == []  # the caller returns (and writes its response) first
    await asyncio.sleep(0)
    assert seen == ["a", "b"] and rec.pending == []
    rec.later(Note("c", seen))  # a new batch schedules its own flush
    await asyncio.sleep(0)
    assert seen == ["a", "b", "c"]


async def test_flush_records_what_waits_now_and_the_scheduled_flush_finds_nothing() -> None:
    rec, seen = recorder(), list[str]()
    rec.defer_to(asyncio.get_running_loop())
    rec.later(Note("a", seen))
    rec.flush()
    assert seen == ["a"]
    await asyncio.sleep(0)
    assert seen == ["a"]


async def test_one_failing_record_does_not_lose_the_others() -> None:
    rec, seen = recorder(), list[str]()
    rec.defer_to(asyncio.get_running_loop())
    rec.later(Note("a", seen))
    rec.later(Note("broken", seen, fail=True))
    rec.later(Note("c", seen))
    await asyncio.sleep(0)
    assert seen == ["a", "c"] and rec.pending == []


def test_a_closed_loop_records_at_once() -> None:
    rec, seen = recorder(), list[str]()
    loop = asyncio.new_event_loop()
    loop.close()
    rec.defer_to(loop)
    rec.later(Note("a", seen))
    assert seen == ["a"] and rec.pending == []


async def test_defer_to_none_flushes_and_records_at_once_from_then_on() -> None:
    rec, seen = recorder(), list[str]()
    rec.defer_to(asyncio.get_running_loop())
    rec.later(Note("a", seen))
    rec.defer_to(None)
    assert seen == ["a"]
    rec.later(Note("b", seen))
    assert seen == ["a", "b"]
