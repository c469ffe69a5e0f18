"""TuningEngine, a `meshlens up` / `meshlens analytics` component: every `interval_s` it refreshes
the suggestions and verifies due rollouts (rolling back the ones that made things worse).

It writes policies through its own PolicyStore over the shared store, as another control-plane
replica would (the store's compare-and-set on the version number settles races with operator
writes); the serving control plane picks the new version up on its store sync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from analytics.controlplane.audit import AuditLog
from analytics.controlplane.policies import PolicyStore
from analytics.controlplane.repository import ControlPlaneRepository
from analytics.periodic import PeriodicComponent
from analytics.tuning.service import TuningOptions, TuningService
from collector.store import Store

__all__ = ["TuningEngine"]

logger = logging.getLogger(__name__)


class TuningEngine(PeriodicComponent):
    """A component owning the tuning loop's background task."""

    name = "tuning"
    _failure_message = "tuning round failed"

    def __init__(
        self,
        store: Store,
        *,
        interval_s: float = 60.0,
        options: TuningOptions | None = None,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        super().__init__(sleep)
        repository = ControlPlaneRepository(store)
        audit = AuditLog(repository, clock=wall_clock)
        policies = PolicyStore(repository, audit, on_change=lambda: None, clock=wall_clock)
        self._cp_repository = repository
        self.service = TuningService(store, policies, audit, options=options, wall_clock=wall_clock)
        self._interval_s = interval_s

    async def _prepare(self) -> None:
        await self._cp_repository.create_tables()
        await self.service.ensure_tables()

    async def run_once(self) -> None:
        """One refresh and one verification round."""
        found = await self.service.refresh()
        verified = await self.service.verify_due()
        self.runs += 1
        if found.suggestions or verified:
            logger.info(
                "tuning round",
                extra={"suggestions": len(found.suggestions), "judged": len(verified)},
            )

    def _delay(self) -> float:
        return self._interval_s
