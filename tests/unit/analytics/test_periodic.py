"""analytics/periodic.py: the engines' loop survives a failing round and stops on shutdown."""

from __future__ import annotations

import asyncio

from analytics.periodic import PeriodicComponent


class _Flaky(PeriodicComponent):
    name = "flaky"

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.prepared = False
        self.rounds_done = asyncio.Event()
        super().__init__(self._record_sleep)

    async def _record_sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if len(self.slept) >= 3:
            self.rounds_done.set()
        await asyncio.sleep(0)

    async def _prepare(self) -> None:
        self.prepared = True

    async def run_once(self) -> None:
        self.runs += 1
        if self.runs == 2:
            raise RuntimeError("store unavailable")

    def _delay(self) -> float:
        return 7.0


async def test_a_failing_round_is_counted_and_the_loop_goes_on() -> None:
    component = _Flaky()
    await component.start()
    assert component.prepared
    await asyncio.wait_for(component.rounds_done.wait(), timeout=5)
    await component.shutdown()
    assert component.runs >= 3 and component.failures == 1
    assert set(component.slept) == {7.0}
    assert component._task is None and component.addresses() == {}
