"""The sidecar's admin HTTP server (off the hot path): health, metrics, config, stats, drain.

GET  /healthz   200 while the process runs
GET  /ready     200 once listeners are up and a config is active; 503 while draining
GET  /metrics   Prometheus text (Istio standard metrics + our own)
GET  /config    effective config and its version (JSON)
GET  /stats     per-upstream endpoint, breaker, budget and listener state (JSON)
POST /drain     start a graceful drain (202); the process exits when it finishes

It runs on the sidecar's own HTTP/1.1 codec (sidecar/codec.py) with one small handler, so the
sidecar process does not load a web framework (aiohttp alone is ~15 MB of RSS).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

from sidecar.codec import HttpServer, ServerConfig
from sidecar.http import Request, Response
from sidecar.peers import LocalAddresses
from sidecar.stack import Handler

__all__ = ["PROMETHEUS_CONTENT_TYPE", "AdminServer", "AdminSource", "admin_handler"]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json; charset=utf-8"
_MAX_BODY_BYTES = 64 * 1024  # admin requests carry no body; a larger one is refused
_DRAIN_TIMEOUT_S = 1.0  # let the last admin responses flush when the sidecar stops


class AdminSource(Protocol):
    """What the admin server reads from (and asks of) the running sidecar."""

    def is_ready(self) -> bool: ...

    def metrics_text(self) -> str: ...

    def config_doc(self) -> dict[str, object]: ...

    def stats_doc(self) -> dict[str, object]: ...

    def request_drain(self) -> bool:
        """Start draining; False if a drain was already under way."""
        ...


def _text(text: str, status: int = 200, content_type: str = _TEXT) -> Response:
    return Response(status, (("content-type", content_type),), text.encode())


def _json(doc: dict[str, object], status: int = 200) -> Response:
    text = json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"
    return _text(text, status, _JSON)


def admin_handler(source: AdminSource, local: LocalAddresses | None = None) -> Handler:
    """The admin endpoints over `source`, as a sidecar handler (Request -> Response). Those
    that change state (POST /drain) answer 403 to a peer that is not `local`."""
    local = local if local is not None else LocalAddresses()

    def healthz() -> Response:
        return _text("ok\n")

    def ready() -> Response:
        if source.is_ready():
            return _text("ready\n")
        return _text("not ready\n", 503)

    def metrics() -> Response:
        return _text(source.metrics_text(), content_type=PROMETHEUS_CONTENT_TYPE)

    def config() -> Response:
        return _json(source.config_doc())

    def stats() -> Response:
        return _json(source.stats_doc())

    def drain() -> Response:
        started = source.request_drain()
        return _json({"draining": True, "started": started}, status=202)

    routes: dict[str, tuple[str, Callable[[], Response]]] = {
        "/healthz": ("GET", healthz),
        "/ready": ("GET", ready),
        "/metrics": ("GET", metrics),
        "/config": ("GET", config),
        "/stats": ("GET", stats),
        "/drain": ("POST", drain),
    }

    async def handle(request: Request) -> Response:
        body = request.body
        if not isinstance(body, bytes):  # read it so the connection can carry the next request
            received = 0
            while chunk := await body.read():
                received += len(chunk)
                if received > _MAX_BODY_BYTES:
                    return _text("request body too large\n", 413)
        route = routes.get(request.path)
        if route is None:
            return _text("not found\n", 404)
        method, endpoint = route
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            allow = "GET, HEAD" if method == "GET" else method
            return Response(405, (("allow", allow), ("content-type", _TEXT)), b"not allowed\n")
        if method != "GET" and not local.includes(request.context.downstream_addr):
            # (the admin listens where the probes and Prometheus reach it, on 0.0.0.0 when
            # deployed: reading is for them, changing state for this host only)
            return _text(f"{request.path} is served to this host only\n", 403)
        return endpoint()

    return handle


class AdminServer:
    """Runs the admin endpoints on host:port (0 picks a free port)."""

    def __init__(self, source: AdminSource, local: LocalAddresses | None = None) -> None:
        handler = admin_handler(source, local)
        self._server = HttpServer(
            ServerConfig(direction="inbound", forwarded_for=False, idle_timeout_s=30.0),
            lambda: handler,
        )
        self._started = False

    async def start(self, host: str, port: int) -> tuple[str, int]:
        address = await self._server.start(host, port)
        self._started = True
        return address

    async def close(self) -> None:
        """Let in-flight admin responses (e.g. to POST /drain) flush, then close. Idempotent."""
        if not self._started:
            return
        self._started = False
        await self._server.drain(_DRAIN_TIMEOUT_S)
        await self._server.close()
