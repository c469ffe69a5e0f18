"""Choosing the upstream protocol per request, without importing the HTTP/2 stack.

`protocol_terminal` picks the HTTP/1.1 or the HTTP/2 handler; `LazyH2Pool` is the HTTP/2 pool
(sidecar/h2upstream.py) created on its first request, so a sidecar whose traffic is all HTTP/1.1
never imports `h2` (about 3 MB of RSS).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sidecar.http import Request, Response
from sidecar.stack import Handler

if TYPE_CHECKING:
    from sidecar.h2upstream import H2Pool

__all__ = ["PROTOCOLS", "LazyH2Pool", "protocol_terminal"]

PROTOCOLS = frozenset({"http1", "h2", "grpc", "auto"})


class LazyH2Pool:
    """An `H2Pool` made (and `h2` imported) on the first request; same call, stats and close."""

    def __init__(self, *, tls: Callable[[], ssl.SSLContext | None] | None = None) -> None:
        self._tls = tls
        self.pool: H2Pool | None = None

    def __call__(self, request: Request) -> Awaitable[Response]:
        pool = self.pool
        if pool is None:
            from sidecar.h2upstream import H2Pool

            pool = self.pool = H2Pool(tls=self._tls)
        return pool(request)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    def stats(self) -> dict[str, object]:
        if self.pool is not None:
            return self.pool.stats()
        return {"connections_opened": 0, "streams": 0, "open": {}}


def protocol_terminal(
    http1: Handler, h2: Handler, protocol: str | Callable[[Request], str] = "auto"
) -> Handler:
    """The terminal choosing the upstream protocol: `auto` speaks what the downstream spoke.

    `protocol` is fixed or read per request (e.g. from the upstream's config); gRPC
    (content-type application/grpc) always goes over HTTP/2, which it requires.
    """
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
        if protocol in ("h2", "grpc"):
            return h2
        fixed = protocol
        choose: Callable[[Request], str] = lambda request: fixed  # noqa: E731
    else:
        choose = protocol

    def handle(request: Request) -> Awaitable[Response]:
        chosen = choose(request)
        if chosen in ("h2", "grpc") or _is_grpc(request):
            return h2(request)
        if chosen == "auto" and request.version == "2":
            return h2(request)
        return http1(request)

    return handle


def _is_grpc(request: Request) -> bool:
    for name, value in request.headers:
        if name == "content-type":
            return value.startswith("application/grpc")
    return False
