"""Fixtures for control-plane tests: the real app on the embedded store in tmp_path."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from analytics.main import create_app
from analytics.settings import Settings
from tests.unit.analytics.controlplane.helpers import Harness, ManualClock, make_settings, never


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    clock = ManualClock(1000.0)
    wall = ManualClock(time.time())
    app = create_app(settings, clock=clock, wall_clock=wall, sleep=never)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            yield Harness(app, client, clock, wall)
