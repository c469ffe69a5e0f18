"""A bounded write-behind buffer for high-rate control-plane rows (ACKs, registration events).

Rows are flushed in one insert per batch; when the store is away the buffer keeps at most
`max_rows` and drops the oldest, counting the drops, so memory never grows without limit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from analytics.controlplane.errors import Unavailable

__all__ = ["Spool"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Spool(Generic[T]):
    """Buffer rows and hand them to `write` in batches."""

    def __init__(
        self, name: str, write: Callable[[Sequence[T]], Awaitable[None]], *, max_rows: int = 10_000
    ) -> None:
        if max_rows <= 0:
            raise ValueError(f"max_rows must be > 0, got {max_rows}")
        self._name = name
        self._write = write
        self._rows: deque[T] = deque(maxlen=max_rows)
        self._max_rows = max_rows
        self.dropped = 0
        self._failing = False

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: T) -> None:
        if len(self._rows) == self._max_rows:
            self.dropped += 1
        self._rows.append(row)

    async def flush(self) -> int:
        """Write everything buffered; on a store outage keep the rows and return 0."""
        if not self._rows:
            return 0
        batch = list(self._rows)
        self._rows.clear()
        try:
            await self._write(batch)
        except Unavailable:
            # Put the batch back in front of rows added meanwhile, still within the bound.
            kept = [*batch, *self._rows]
            overflow = max(0, len(kept) - self._max_rows)
            self.dropped += overflow
            self._rows = deque(kept[overflow:], maxlen=self._max_rows)
            if not self._failing:
                logger.warning(
                    "spool flush failing; keeping rows",
                    extra={"spool": self._name, "rows": len(batch), "dropped": self.dropped},
                )
            self._failing = True
            return 0
        if self._failing:
            logger.info("spool flush recovered", extra={"spool": self._name, "rows": len(batch)})
            self._failing = False
        return len(batch)
