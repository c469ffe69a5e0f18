"""Telemetry layers: the outbound logical request (metrics, access log), one CLIENT span per
attempt (injecting traceparent upstream), and the inbound SERVER span (passing its id to the app).

Spans end when the response body has streamed to its end (or failed); they are recorded as
compact tuples into the Recorder and encoded for OTLP off the request path. A buffered body's
exchange is recorded after the response is written (Recorder.later), with the time it ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from sidecar.http import Request, RequestContext, Response, new_response
from sidecar.stack import AttemptStage, Handler, Layer
from sidecar.telemetry.context import extract
from sidecar.telemetry.exchange import (
    ATTEMPT,
    Done,
    defer_attempt,
    defer_inbound,
    defer_outbound,
    finish_attempt,
    finish_inbound,
    finish_outbound,
)
from sidecar.telemetry.recorder import Recorder
from sidecar.telemetry.semconv import ObservedBody, inject

__all__ = ["AttemptLayer", "attempt_layer", "inbound_layer", "outbound_layer"]

ERROR_REASON: Final = "meshlens.error.reason"  # written by layers/proxy_errors.py

_EndFn = Callable[[Done], None]


def _failure(exc: BaseException) -> Done:
    if isinstance(exc, asyncio.CancelledError):
        return Done(0, "cancelled", 0)
    status = getattr(exc, "status", 500)
    reason = getattr(exc, "reason", "") or type(exc).__name__
    return Done(status if isinstance(status, int) else 500, str(reason), 0)


def _observe(response: Response, error: str, end: _EndFn) -> Response:
    """Call `end` now for a buffered body, or when a streamed body finishes."""
    body = response.body
    if isinstance(body, bytes):
        end(Done(response.status, error, len(body)))
        return response

    status = response.status

    def on_end(nbytes: int, stream_error: str) -> None:
        end(Done(status, error or stream_error, nbytes))

    observed = ObservedBody(body, on_end)
    return new_response(status, response.headers, observed, response.reason, response.trailers)


def _own_error(ctx: RequestContext) -> str:
    # proxy_errors (inside this layer) records the reason of every response it makes; the
    # x-meshlens-error header alone could also come from another sidecar further upstream.
    reason = ctx.attributes.get(ERROR_REASON, "")
    return reason if isinstance(reason, str) else ""


def outbound_layer(rec: Recorder) -> Layer:
    """Outermost on the outbound stack: trace id, Istio source metrics, access log."""

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            ctx = request.context
            start = rec.now_ns()
            remote = extract(request.headers)
            if remote is not None:
                ctx.trace_id, ctx.parent_span_id = remote.trace_id, remote.span_id
                ctx.trace_flags, ctx.tracestate = remote.flags, remote.tracestate
            else:
                ctx.trace_id, ctx.parent_span_id, ctx.tracestate = rec.ids.trace_id(), b"", ""
                ctx.trace_flags = rec.root_flags(ctx.trace_id)

            try:
                response = await inner(request)
            except BaseException as exc:
                finish_outbound(rec, request, start, _failure(exc))
                raise
            body = response.body
            if isinstance(body, bytes):  # (no closure to build for the common buffered body)
                done = Done(response.status, _own_error(ctx), len(body))
                defer_outbound(rec, request, start, done)
                return response

            def end(done: Done) -> None:
                finish_outbound(rec, request, start, done)

            return _observe(response, _own_error(ctx), end)

        return handle

    return wrap


class _Attempt:
    """What `AttemptLayer.begin` hands to `end`/`fail`: this attempt's number, span, start."""

    __slots__ = ("number", "span_id", "start")

    def __init__(self, number: int, span_id: bytes, start: int) -> None:
        self.number = number
        self.span_id = span_id
        self.start = start


class AttemptLayer(AttemptStage):
    """Per attempt (inside retry): a CLIENT span, its traceparent upstream, client duration.

    A Layer, and an AttemptStage a fused route runs without a coroutine of its own."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__(keeps_whole=True)  # (a whole response: recorded, returned as it is)
        self.rec = rec

    def begin(self, request: Request) -> tuple[Request, object]:
        rec = self.rec
        ctx = request.context
        attrs = ctx.attributes
        previous = attrs.get(ATTEMPT, 0)
        number = (previous if isinstance(previous, int) else 0) + 1
        attrs[ATTEMPT] = number
        if number > 1:
            reason = attrs.get("meshlens.retry.reason", "unknown")
            rec.retries.inc((ctx.upstream, str(reason)))
        span_id = rec.ids.span_id()
        headers = inject(request.headers, ctx.trace_id, span_id, ctx.trace_flags, ctx.tracestate)
        forwarded = request.with_headers(headers)
        return forwarded, _Attempt(number, span_id, rec.now_ns())

    def end(self, request: Request, token: object, response: Response) -> Response:
        assert isinstance(token, _Attempt)
        rec = self.rec
        body = response.body
        if isinstance(body, bytes):
            done = Done(response.status, "", len(body))
            defer_attempt(rec, request, token.number, token.span_id, token.start, done)
            return response
        number, span_id, start = token.number, token.span_id, token.start

        def end(done: Done) -> None:
            finish_attempt(rec, request, number, span_id, start, done)

        return _observe(response, "", end)

    def fail(self, request: Request, token: object, exc: BaseException) -> None:
        assert isinstance(token, _Attempt)
        finish_attempt(self.rec, request, token.number, token.span_id, token.start, _failure(exc))

    def __call__(self, inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            forwarded, token = self.begin(request)
            try:
                response = await inner(forwarded)
            except BaseException as exc:
                self.fail(request, token, exc)
                raise
            return self.end(request, token, response)

        return handle


def attempt_layer(rec: Recorder) -> AttemptLayer:
    """Per attempt (inside retry): a CLIENT span, its traceparent upstream, client duration."""
    return AttemptLayer(rec)


def inbound_layer(rec: Recorder) -> Layer:
    """Outermost on the inbound stack: the SERVER span, whose id the app gets as its parent."""

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            ctx = request.context
            start = rec.now_ns()
            remote = extract(request.headers)
            if remote is not None:
                parent, ctx.trace_id = remote.span_id, remote.trace_id
                ctx.trace_flags, ctx.tracestate = remote.flags, remote.tracestate
            else:
                parent, ctx.trace_id, ctx.tracestate = b"", rec.ids.trace_id(), ""
                ctx.trace_flags = rec.root_flags(ctx.trace_id)
            span_id = ctx.parent_span_id = rec.ids.span_id()
            headers = inject(
                request.headers, ctx.trace_id, span_id, ctx.trace_flags, ctx.tracestate
            )
            forwarded = request.with_headers(headers)

            try:
                response = await inner(forwarded)
            except BaseException as exc:
                finish_inbound(rec, request, span_id, parent, start, _failure(exc))
                raise
            body = response.body
            if isinstance(body, bytes):
                done = Done(response.status, _own_error(ctx), len(body))
                defer_inbound(rec, request, span_id, parent, start, done)
                return response

            def end(done: Done) -> None:
                finish_inbound(rec, request, span_id, parent, start, done)

            return _observe(response, _own_error(ctx), end)

        return handle

    return wrap
