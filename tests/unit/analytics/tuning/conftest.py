"""The real analytics app (control plane included) over a migrated embedded store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from analytics.main import create_app
from collector.store import Store
from tests.unit.analytics.controlplane.helpers import Harness, ManualClock, make_settings, never
from tests.unit.analytics.tuning.traffic import T0


@pytest.fixture
async def harness(store: Store, tmp_path: Path) -> AsyncIterator[Harness]:
    clock = ManualClock(1000.0)
    wall = ManualClock(T0 + 600)  # the end of the constructed traffic
    app = create_app(
        make_settings(tmp_path), store=store, clock=clock, wall_clock=wall, sleep=never
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            yield Harness(app, client, clock, wall)
