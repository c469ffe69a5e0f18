"""gRPC awareness: grpc-timeout as the request deadline (bounded here, propagated per attempt),
and grpc-status / grpc-message from headers (Trailers-Only) or trailers onto the span attributes.

Only requests with `content-type: application/grpc*` are touched; everything else passes through.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from sidecar.errors import ERROR_HEADER, UpstreamTimeout
from sidecar.http import BodyStream, Request, Response, header_value, parse_digits, with_header
from sidecar.stack import AttemptStage, Clock, Handler, Layer, monotonic

__all__ = [
    "GRPC_CODES",
    "STATUS_ATTR",
    "GrpcAttemptLayer",
    "format_timeout",
    "grpc_attempt_layer",
    "grpc_layer",
    "grpc_status",
    "is_grpc",
    "local_reply",
    "parse_timeout",
]

STATUS_ATTR = "rpc.grpc.status_code"  # OTel semantic convention (rpc spans)
MESSAGE_ATTR = "meshlens.grpc.message"
GRPC_CODES = {
    "ok": 0,
    "cancelled": 1,
    "unknown": 2,
    "invalid-argument": 3,
    "deadline-exceeded": 4,
    "not-found": 5,
    "already-exists": 6,
    "permission-denied": 7,
    "resource-exhausted": 8,
    "failed-precondition": 9,
    "aborted": 10,
    "out-of-range": 11,
    "unimplemented": 12,
    "internal": 13,
    "unavailable": 14,
    "data-loss": 15,
    "unauthenticated": 16,
}
# The proxy's own answers in gRPC form (a gRPC client reads HTTP 503/504 as UNAVAILABLE)
_STATUS_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 408: 4, 413: 8, 429: 8, 499: 1, 504: 4}
# /package.Service/Method; anything else keeps the configured route (bounded label values)
_METHOD = re.compile(r"/([A-Za-z_][\w.]{0,99})/([A-Za-z_]\w{0,63})")
ROUTE_ATTR = "meshlens.route"
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def is_grpc(request: Request) -> bool:
    value = header_value(request.headers, "content-type")
    return value is not None and value.startswith("application/grpc")


def parse_timeout(value: str) -> float | None:
    """Seconds from a grpc-timeout value (1-8 digits and a unit, e.g. `250m`), None if invalid."""
    value = value.strip()
    amount = parse_digits(value[:-1], 8)
    unit = value[-1:]
    if amount is None or unit not in _UNITS:
        return None
    return amount * _UNITS[unit]


def format_timeout(seconds: float) -> str:
    """A grpc-timeout value for `seconds` (the finest unit that fits in 8 digits)."""
    seconds = max(0.0, seconds)
    for unit, scale in (("u", 1e-6), ("m", 1e-3), ("S", 1.0), ("M", 60.0)):
        amount = int(seconds / scale)
        if amount < 100_000_000:
            return f"{amount}{unit}"
    return f"{min(99_999_999, int(seconds / 3600))}H"


def grpc_status(response: Response) -> tuple[int, str] | None:
    """(grpc-status, grpc-message) from a Trailers-Only head or the received trailers."""
    headers = response.headers
    code = header_value(headers, "grpc-status")
    if code is None and response.trailers is not None and response.trailers.received:
        headers = response.trailers.fields
        code = header_value(headers, "grpc-status")
    number = parse_digits(code.strip(), 9) if code is not None else None
    if number is None:
        return None
    return number, header_value(headers, "grpc-message") or ""


class _StatusBody:
    """Passes a streamed body through; when it ends, records the gRPC status from trailers."""

    __slots__ = ("_body", "_on_end", "_response")

    def __init__(self, body: BodyStream, response: Response, on_end: Callable[[], None]):
        self._body = body
        self._response = response
        self._on_end = on_end

    @property
    def length(self) -> int | None:
        return self._body.length

    async def read(self) -> bytes:
        chunk = await self._body.read()
        if not chunk:
            self._on_end()
        return chunk


def _describe(request: Request) -> None:
    """rpc.* attributes, and the gRPC method as the route the service map and RED figures use."""
    attrs = request.context.attributes
    attrs["rpc.system"] = "grpc"
    match = _METHOD.fullmatch(request.path)
    if match is None:
        return
    attrs["rpc.service"], attrs["rpc.method"] = match.group(1), match.group(2)
    route = attrs[ROUTE_ATTR] = f"{match.group(1)}/{match.group(2)}"
    if not request.context.route:  # inbound (no routing layer): server metrics per method
        request.context.route = route


def local_reply(request: Request, response: Response) -> Response:
    """The sidecar's own error `response` as a gRPC Trailers-Only answer (HTTP 200)."""
    reason = header_value(response.headers, ERROR_HEADER)
    if reason is None or response.status == 200:
        return response
    return _reply(_STATUS_TO_GRPC.get(response.status, 14), reason)


def _reply(code: int, reason: str) -> Response:
    headers = (
        ("content-type", "application/grpc"),
        ("grpc-status", str(code)),
        ("grpc-message", f"meshlens: {reason}"),
        (ERROR_HEADER, reason),
    )
    return Response(200, headers, b"")


def _record(request: Request, response: Response) -> Response:
    """Put the gRPC status on the context now, or when a streamed body has ended."""
    attrs = request.context.attributes

    def record() -> None:
        status = grpc_status(response)
        if status is not None:
            attrs[STATUS_ATTR] = status[0]
            if status[1]:
                attrs[MESSAGE_ATTR] = status[1][:200]

    body = response.body
    if isinstance(body, bytes) or header_value(response.headers, "grpc-status") is not None:
        record()
        return response
    wrapped = _StatusBody(body, response, record)
    return Response(response.status, response.headers, wrapped, response.reason, response.trailers)


def grpc_layer(*, clock: Clock = monotonic) -> Layer:
    """Outer (per request): honour grpc-timeout as the deadline; record the final gRPC status."""

    def wrap(inner: Handler) -> Handler:
        def handle(request: Request) -> Awaitable[Response]:
            # not gRPC: the inner handler's own awaitable, no coroutine of ours (hot path)
            return grpc(request) if is_grpc(request) else inner(request)

        async def grpc(request: Request) -> Response:
            context = request.context
            context.write_final = None  # (its answer is made here: none goes out as it comes)
            _describe(request)
            value = header_value(request.headers, "grpc-timeout")
            timeout_s = parse_timeout(value) if value is not None else None
            if timeout_s is None:
                return _record(request, local_reply(request, await inner(request)))
            deadline = clock() + timeout_s
            if context.deadline is None or deadline < context.deadline:
                context.deadline = deadline
            try:
                async with asyncio.timeout(timeout_s):
                    response = await inner(request)
            except TimeoutError:
                context.attributes["meshlens.timeout.fired"] = "grpc_timeout"
                response = _reply(4, UpstreamTimeout.reason)  # DEADLINE_EXCEEDED
            return _record(request, local_reply(request, response))

        return handle

    return wrap


class GrpcAttemptLayer(AttemptStage):
    """Per attempt: forward the remaining deadline as grpc-timeout; record this try's status.

    Nothing to do for other requests: as an AttemptStage it passes them (a fused route runs
    it without a coroutine) and bypasses gRPC ones (their route takes the full chain)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(passive=True, may_bypass=True)
        self.clock = clock

    def bypass(self, request: Request) -> bool:
        return is_grpc(request)

    def __call__(self, inner: Handler) -> Handler:
        clock = self.clock

        def handle(request: Request) -> Awaitable[Response]:
            return grpc(request) if is_grpc(request) else inner(request)

        async def grpc(request: Request) -> Response:
            _describe(request)  # again: routing (between the layers) set its route name
            deadline = request.context.deadline
            if deadline is not None:
                remaining = format_timeout(deadline - clock())
                request = request.with_headers(
                    with_header(request.headers, "grpc-timeout", remaining)
                )
            return _record(request, await inner(request))

        return handle


def grpc_attempt_layer(*, clock: Clock = monotonic) -> GrpcAttemptLayer:
    """Per attempt: forward the remaining deadline as grpc-timeout; record this try's status."""
    return GrpcAttemptLayer(clock)
