"""PeriodicComponent: the background loop shared by the analysis and tuning engines.

A `meshlens up` / `meshlens analytics` component whose task calls `run_once()` forever, sleeping
`_delay()` seconds between rounds. A round that raises is counted and logged, and the loop goes
on: each round recomputes from the store, so a store outage or one bad window loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["PeriodicComponent"]

logger = logging.getLogger(__name__)


class PeriodicComponent:
    """Owns one background task; subclasses implement `_prepare`, `run_once` and `_delay`."""

    name = "periodic"
    _failure_message = "periodic round failed"

    def __init__(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        self.failures = 0

    async def _prepare(self) -> None:
        """Before the first round (tables the rounds write)."""

    async def run_once(self) -> object:
        raise NotImplementedError

    def _delay(self) -> float:
        raise NotImplementedError

    async def start(self) -> None:
        await self._prepare()
        self._task = asyncio.create_task(self._loop(), name=f"meshlens-{self.name}")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def addresses(self) -> dict[str, str]:
        return {}

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                # Task boundary: the next round starts again from the store (module docstring).
                self.failures += 1
                logger.exception(self._failure_message, extra={"failures": self.failures})
            await self._sleep(self._delay())
