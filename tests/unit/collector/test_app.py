from __future__ import annotations

import asyncio
import io

from collector.app import run_components


class RecordingComponent:
    """A component that records its lifecycle calls into a shared journal."""

    def __init__(self, name: str, journal: list[str], fail_shutdown: bool = False) -> None:
        self.name = name
        self._journal = journal
        self._fail_shutdown = fail_shutdown

    async def start(self) -> None:
        self._journal.append(f"start {self.name}")

    async def shutdown(self) -> None:
        self._journal.append(f"stop {self.name}")
        if self._fail_shutdown:
            raise RuntimeError("shutdown failed (test)")

    def addresses(self) -> dict[str, str]:
        return {f"{self.name}-port": f"127.0.0.1:{len(self.name)}"}


async def test_components_start_in_order_print_addresses_and_stop_in_reverse() -> None:
    journal: list[str] = []
    out = io.StringIO()
    stop = asyncio.Event()
    components = [
        RecordingComponent("collector", journal),
        RecordingComponent("ui", journal, fail_shutdown=True),
        RecordingComponent("api", journal),
    ]
    task = asyncio.create_task(run_components(components, stop, out))
    for _ in range(100):
        if "meshlens ready" in out.getvalue():
            break
        await asyncio.sleep(0.001)
    stop.set()
    await task

    assert journal == [
        "start collector", "start ui", "start api", "stop api", "stop ui", "stop collector",
    ]  # fmt: skip
    assert out.getvalue().splitlines() == [
        "collector-port listening on 127.0.0.1:9",
        "ui-port listening on 127.0.0.1:2",
        "api-port listening on 127.0.0.1:3",
        "meshlens ready",
    ]


class FailingStart(RecordingComponent):
    async def start(self) -> None:
        raise OSError("address in use (test)")


async def test_a_component_failing_to_start_stops_the_ones_already_started() -> None:
    journal: list[str] = []
    components = [RecordingComponent("collector", journal), FailingStart("ui", journal)]
    try:
        await run_components(components, asyncio.Event(), io.StringIO())
    except OSError as exc:
        assert "address in use" in str(exc)
    else:
        raise AssertionError("start failure was swallowed")
    assert journal == ["start collector", "stop collector"]
