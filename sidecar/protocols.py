"""Choosing the upstream protocol per request, without importing the HTTP/2 stack.

`protocol_terminal` picks the HTTP/1.1 or the HTTP/2 handler; `LazyH2Pool` is the HTTP/2 pool
(sidecar/h2upstream.py) created on its first request, so a sidecar whose traffic is all HTTP/1.1
never imports `h2` (about 3 MB of RSS).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sidecar.errors import NoRoute
from sidecar.http import Request, Response
from sidecar.loops import OutgoingConnections
from sidecar.stack import Handler

if TYPE_CHECKING:
    from sidecar.h2upstream import H2Pool

__all__ = ["PROTOCOLS", "LazyH2Pool", "OwnListeners", "guarded_terminal", "protocol_terminal"]

PROTOCOLS = frozenset({"http1", "h2", "grpc", "auto"})


class LazyH2Pool:
    """An `H2Pool` made (and `h2` imported) on the first request; same call, stats and close."""

    def __init__(
        self,
        *,
        tls: Callable[[], ssl.SSLContext | None] | None = None,
        outgoing: OutgoingConnections | None = None,
    ) -> None:
        self._tls = tls
        self._outgoing = outgoing
        self.pool: H2Pool | None = None

    def __call__(self, request: Request) -> Awaitable[Response]:
        pool = self.pool
        if pool is None:
            from sidecar.h2upstream import H2Pool

            pool = self.pool = H2Pool(tls=self._tls, outgoing=self._outgoing)
        return pool(request)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    def stats(self) -> dict[str, object]:
        if self.pool is not None:
            return self.pool.stats()
        return {"connections_opened": 0, "streams": 0, "open": {}}


def protocol_terminal(
    http1: Handler,
    h2: Handler,
    protocol: str | Callable[[Request], str] | dict[str, str] = "auto",
) -> Handler:
    """The terminal choosing the upstream protocol: `auto` speaks what the downstream spoke.

    `protocol` is fixed, read per request (a function), or a dict from upstream name
    (context.upstream) to its configured protocol, "auto" for names it lacks; the dict is read
    on each request, so its owner may update it in place. gRPC (content-type application/grpc)
    always goes over HTTP/2, which it requires.
    """
    if isinstance(protocol, dict):
        by_upstream = protocol

        def choose_by_upstream(request: Request) -> Awaitable[Response]:
            chosen = by_upstream.get(request.context.upstream, "auto")
            if chosen == "h2" or chosen == "grpc" or _is_grpc(request):
                return h2(request)
            if chosen == "auto" and request.version == "2":
                return h2(request)
            return http1(request)

        return choose_by_upstream
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


class OwnListeners:
    """The sidecar's own listeners: hosts it answers on and its bound ports (set at start)."""

    __slots__ = ("hosts", "ports")

    def __init__(self, hosts: frozenset[str], ports: frozenset[int] = frozenset()) -> None:
        self.hosts = hosts
        self.ports = ports

    def includes(self, host: str, port: int) -> bool:
        return port in self.ports and host in self.hosts


def guarded_terminal(
    terminal: Handler, own: OwnListeners, restore: Callable[[Request], Request]
) -> Handler:
    """`terminal` for `restore(request)`, refusing a request whose endpoint is one of `own`
    (it would come straight back into this sidecar: NoRoute). No coroutine of its own."""

    def handle(request: Request) -> Awaitable[Response]:
        endpoint = request.context.endpoint
        if endpoint is not None and endpoint.port in own.ports and endpoint.host in own.hosts:
            raise NoRoute(f"{endpoint.address} is this sidecar's own listener (request loop)")
        return terminal(restore(request))

    return handle
