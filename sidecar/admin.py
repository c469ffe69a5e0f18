"""The sidecar's admin HTTP server (aiohttp; off the hot path): health, metrics, config, stats.

GET  /healthz   200 while the process runs
GET  /ready     200 once listeners are up and a config is active; 503 while draining
GET  /metrics   Prometheus text (Istio standard metrics + our own)
GET  /config    effective config and its version (JSON)
GET  /stats     per-upstream endpoint, breaker, budget and listener state (JSON)
POST /drain     start a graceful drain (202); the process exits when it finishes
"""

from __future__ import annotations

import json
from typing import Protocol

from aiohttp import web

__all__ = ["AdminServer", "AdminSource", "create_admin_app"]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class AdminSource(Protocol):
    """What the admin server reads from (and asks of) the running sidecar."""

    def is_ready(self) -> bool: ...

    def metrics_text(self) -> str: ...

    def config_doc(self) -> dict[str, object]: ...

    def stats_doc(self) -> dict[str, object]: ...

    def request_drain(self) -> bool:
        """Start draining; False if a drain was already under way."""
        ...


def _json(doc: dict[str, object], status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n",
        content_type="application/json",
    )


def create_admin_app(source: AdminSource) -> web.Application:
    """The admin aiohttp application over `source`."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def ready(_: web.Request) -> web.Response:
        if source.is_ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(text=source.metrics_text())
        response.headers["Content-Type"] = PROMETHEUS_CONTENT_TYPE
        return response

    async def config(_: web.Request) -> web.Response:
        return _json(source.config_doc())

    async def stats(_: web.Request) -> web.Response:
        return _json(source.stats_doc())

    async def drain(_: web.Request) -> web.Response:
        started = source.request_drain()
        return _json({"draining": True, "started": started}, status=202)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/config", config)
    app.router.add_get("/stats", stats)
    app.router.add_post("/drain", drain)
    return app


class AdminServer:
    """Runs the admin app on host:port (0 picks a free port)."""

    def __init__(self, source: AdminSource) -> None:
        self._app = create_admin_app(source)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, shutdown_timeout=1.0, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses
        bound = next(a for a in addresses if isinstance(a, tuple))
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
