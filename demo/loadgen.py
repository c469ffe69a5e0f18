"""The load generator: a steady, bounded rate of user journeys and a progress line every second.

Arrivals are open-loop at `rate` journeys/s (a slow mesh does not slow the users down) with at
most `max_in_flight` outstanding; beyond that a journey is counted as shed, never queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from demo.topology import Journey, Topology

__all__ = ["LoadGenerator", "Progress", "Window", "percentile"]

JOURNEY_TIMEOUT_S = 10.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress report: over the last window and since the start."""

    elapsed_s: float
    rate_per_s: float
    errors: int
    requests: int
    p99_ms: float
    total: int
    total_errors: int
    in_flight: int
    shed: int

    def line(self, note: str = "") -> str:
        ratio = self.errors / self.requests if self.requests else 0.0
        text = (
            f"[{self.elapsed_s:5.0f}s] {self.rate_per_s:5.1f} journeys/s  "
            f"errors {ratio:6.1%} ({self.errors:3d})  p99 {self.p99_ms:6.0f} ms  "
            f"in-flight {self.in_flight:3d}  total {self.total} ({self.total_errors} failed)"
        )
        if self.shed:
            text += f"  shed {self.shed}"
        return f"{text}  | {note}" if note else text


class Window:
    """Journey outcomes over a sliding window of `window_s` seconds (injected clock)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, float, bool]] = deque()
        self.total = 0
        self.total_errors = 0

    def record(self, now: float, latency_ms: float, ok: bool) -> None:
        self._samples.append((now, latency_ms, ok))
        self.total += 1
        self.total_errors += not ok

    def snapshot(self, now: float, over_s: float) -> tuple[int, int, float]:
        """(requests, errors) finished in the last `over_s` s, and the p99 over the window."""
        while self._samples and self._samples[0][0] < now - self._window_s:
            self._samples.popleft()
        recent = [s for s in self._samples if s[0] >= now - over_s]
        p99 = percentile([s[1] for s in self._samples], 99)
        return len(recent), sum(not s[2] for s in recent), p99


class LoadGenerator:
    """Drives journeys against the entry URLs until `stop` is set; reports progress each second."""

    def __init__(
        self,
        topology: Topology,
        entry_urls: Sequence[str],
        rate_per_s: float,
        report: Callable[[Progress], None],
        seed: int = 0,
        max_in_flight: int = 64,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < rate_per_s <= 500:
            raise ValueError(f"rate must be in (0, 500] journeys/s, got {rate_per_s}")
        if not entry_urls:
            raise ValueError("no entry URLs")
        self._journeys = topology.journeys
        self._weights = [j.weight for j in topology.journeys]
        self._urls = list(entry_urls)
        self._rate = rate_per_s
        self._report = report
        self._rng = random.Random(seed)
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._sleep = sleep
        self.window = Window()
        self.in_flight = 0
        self.shed = 0
        self.by_journey: dict[str, list[int]] = {j.name: [0, 0] for j in topology.journeys}

    def pick(self) -> tuple[Journey, str]:
        """The next journey (weighted) and the entry instance to send it to."""
        journey = self._rng.choices(self._journeys, weights=self._weights)[0]
        return journey, self._urls[self._rng.randrange(len(self._urls))]

    async def run(self, stop: asyncio.Event) -> None:
        """Send journeys at the configured rate until `stop`; waits for those in flight."""
        timeout = aiohttp.ClientTimeout(total=JOURNEY_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=self._max_in_flight)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._progress(stop))
                start = self._clock()
                sent = 0
                while not stop.is_set():
                    due = start + sent / self._rate
                    delay = due - self._clock()
                    if delay > 0:
                        await self._sleep(min(delay, 0.5))
                        continue
                    sent += 1
                    if self.in_flight >= self._max_in_flight:
                        self.shed += 1
                        continue
                    group.create_task(self._journey(session, *self.pick()))

    async def _journey(self, session: aiohttp.ClientSession, journey: Journey, url: str) -> None:
        self.in_flight += 1
        began = self._clock()
        ok = False
        try:
            async with session.request(journey.method, url + journey.path) as response:
                await response.read()
                ok = response.status < 500
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        finally:
            self.in_flight -= 1
            now = self._clock()
            self.window.record(now, (now - began) * 1000.0, ok)
            counts = self.by_journey[journey.name]
            counts[0] += 1
            counts[1] += not ok

    async def _progress(self, stop: asyncio.Event) -> None:
        start = self._clock()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            self._report(self.progress(self._clock() - start))

    def progress(self, elapsed_s: float, over_s: float = 1.0) -> Progress:
        requests, errors, p99 = self.window.snapshot(self._clock(), over_s)
        return Progress(
            elapsed_s=elapsed_s,
            rate_per_s=requests / over_s,
            errors=errors,
            requests=requests,
            p99_ms=p99,
            total=self.window.total,
            total_errors=self.window.total_errors,
            in_flight=self.in_flight,
            shed=self.shed,
        )
