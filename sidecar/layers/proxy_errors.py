"""Proxy-error mapping layer: the single place a `ProxyError` becomes a marked response.

Sits just inside telemetry (see sidecar/stack.py) so spans see the final status; every response
it makes carries `x-meshlens-error: <reason>` so it is never mistaken for the application's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from sidecar.errors import ERROR_HEADER, ProxyError
from sidecar.http import Request, Response
from sidecar.stack import Handler, Layer

__all__ = [
    "ERROR_HEADER",
    "error_response",
    "map_error",
    "proxy_errors_layer",
    "routed_errors_layer",
]

logger = logging.getLogger(__name__)


def error_response(exc: ProxyError) -> Response:
    """The marked response for `exc`: its status, reason header and a one-line text body."""
    return Response(
        status=exc.status,
        headers=((ERROR_HEADER, exc.reason), ("content-type", "text/plain; charset=utf-8")),
        body=(str(exc) + "\n").encode(),
    )


def map_error(request: Request, exc: ProxyError) -> Response:
    """What this layer does with `exc`: record its reason on the request, make its response."""
    request.context.attributes["meshlens.error.reason"] = exc.reason
    return error_response(exc)


def proxy_errors_layer() -> Layer:
    """Turn any `ProxyError` raised below into its marked response; record the reason."""

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            try:
                return await inner(request)
            except ProxyError as exc:
                return map_error(request, exc)

        return handle

    return wrap


def routed_errors_layer() -> Layer:
    """The proxy_errors layer for a dispatch (routing) whose every route maps its own
    `ProxyError`s (a fused route in its frame, any other behind a `proxy_errors_layer`): only
    what the dispatch itself raises, before a route runs (no route), is mapped here, so the
    routed request has no coroutine of this layer. sidecar/build.py decides."""

    def wrap(inner: Handler) -> Handler:
        def handle(request: Request) -> Awaitable[Response]:
            try:
                return inner(request)
            except ProxyError as exc:
                return _ready(map_error(request, exc))

        return handle

    return wrap


async def _ready(response: Response) -> Response:
    return response
