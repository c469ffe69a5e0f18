"""The analytics app factory: `create_app(settings)` opens the store and includes each router."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from analytics.anomalies.router import router as incidents_router
from analytics.callgraph.router import router as callgraph_router
from analytics.controlplane.errors import ControlPlaneError
from analytics.controlplane.router import error_response
from analytics.controlplane.router import router as controlplane_router
from analytics.controlplane.service import ControlPlane
from analytics.jaeger.router import router as jaeger_router
from analytics.settings import Settings
from analytics.traces.router import router as traces_router
from analytics.tuning.router import router as tuning_router
from analytics.ui.router import router as ui_router
from collector.store import Store, open_store

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> FastAPI:
    """Build the analytics app; a given `store` is used as-is and left open on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        opened = open_store(settings.store_url) if store is None else store
        try:
            plane = await ControlPlane.open(
                settings, opened, clock=clock, wall_clock=wall_clock, sleep=sleep
            )
            plane.start()
            app.state.control_plane = plane
            app.state.store = opened
            try:
                yield
            finally:
                await plane.shutdown()
        finally:
            if own_store:
                await opened.close()

    app = FastAPI(title="meshlens analytics", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.wall_clock = wall_clock
    app.add_exception_handler(ControlPlaneError, error_response)
    app.include_router(controlplane_router)
    app.include_router(traces_router)
    app.include_router(jaeger_router)
    app.include_router(callgraph_router)
    app.include_router(incidents_router)
    app.include_router(tuning_router)
    app.include_router(ui_router)
    return app
