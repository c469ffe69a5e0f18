"""The analytics app factory: `create_app(settings)` opens the store and includes each router."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    app.include_router(controlplane_router)
    app.include_router(traces_router)
    app.include_router(jaeger_router)
    app.include_router(callgraph_router)
    app.include_router(incidents_router)
    app.include_router(tuning_router)
    app.include_router(ui_router)
    return app


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, minus what made it a 500: its default handler echoes each invalid input,
    and a body holding a lone surrogate ("\\ud800") or a number such as 1e400 (infinity) cannot
    be encoded as JSON, so a client's bad request became an Internal Server Error with a
    traceback. An input that is not plain JSON is echoed as its repr, escaped and cut."""
    errors = []
    for error in exc.errors():
        item = {key: value for key, value in error.items() if key in ("type", "loc", "msg")}
        if "input" in error:
            item["input"] = _echo(error["input"])
        errors.append(item)
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def _echo(value: object) -> object:
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")  # as rendered
    except (TypeError, ValueError):  # (UnicodeEncodeError is a ValueError)
        return repr(value)[:200].encode("utf-8", "backslashreplace").decode("utf-8")
    return value
