"""The demo app's capacity option: `serial_ms` serves one request at a time (a FIFO queue)."""

from __future__ import annotations

import asyncio
import time

from opentelemetry import trace

from demo.faults import AppFaults
from demo.services import DemoService
from demo.topology import Operation, Service


async def test_serial_ms_serves_one_request_at_a_time_without_blocking_the_loop() -> None:
    op = Operation("/entries", work_ms=0.0, jitter_ms=0.0)
    app = DemoService(Service("ledger", (op,)), "ledger-1", trace.get_tracer("test"))
    app.faults = AppFaults(serial_ms=40)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    tick = asyncio.create_task(ticker())
    began = time.perf_counter()
    statuses = await asyncio.gather(*(app._serve(op, None) for _ in range(3)))  # type: ignore[arg-type]
    elapsed = time.perf_counter() - began
    tick.cancel()

    assert statuses == [200, 200, 200]
    assert elapsed >= 3 * 0.040 * 0.95  # serialised: never faster than one after the other
    assert ticks >= 5  # the loop kept running meanwhile (a busy loop would starve the ticker)
