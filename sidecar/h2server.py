"""HTTP/2 server side of the sidecar (h2c prior knowledge, h2c Upgrade, TLS): `h2` state machine.

The HTTP/1.1 codec hands a connection over when it sees the client preface or an `Upgrade: h2c`
request; each stream then becomes a `Request` through the same handler stack. Bodies stream both
ways under HTTP/2 flow control: received DATA is acknowledged only as the consumer reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from sidecar.errors import BadRequest, DownstreamError, ProxyError
from sidecar.http import Body, BodyStream, Headers, Request, RequestContext, Response, parse_digits
from sidecar.layers.proxy_errors import error_response
from sidecar.paths import normalize_target

__all__ = [
    "H2_HOP_BY_HOP",
    "PREFACE",
    "H2Body",
    "H2ServerConnection",
    "field_problem",
    "head_problem",
    "response_headers",
    "text_fields",
    "wire_fields",
]

logger = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Connection-specific fields HTTP/2 forbids (RFC 9113 8.2.2); `te: trailers` alone is kept.
H2_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"}
)
_STREAM_WINDOW = 1 << 20  # per-stream receive window we advertise
_CONNECTION_WINDOW = 1 << 24
_MAX_STREAMS = 256
_NO_BODY_STATUSES = frozenset({204, 304})
# Rapid Reset (CVE-2023-44487): a client opening streams and resetting them at once makes the
# server start (and drop) work for each, unbounded by MAX_CONCURRENT_STREAMS. As Envoy does,
# once a connection has opened this many streams and the client reset more than half before
# their answer, it gets GOAWAY ENHANCE_YOUR_CALM and is closed.
_RESET_MIN_STREAMS: Final = 500
# PING / SETTINGS flood (CVE-2019-9512, -9515): each is answered with an ACK; a client that
# sends them without reading grew our write buffer without bound (2 M PINGs: +44 MB). As
# Envoy's max_outbound_control_frames: this many ACKs owed while the write buffer is full and
# the connection is closed.
_MAX_OWED_ACKS: Final = 1000

# What HTTP/1.1's parser (llhttp, sidecar/codec.py) refuses and the h2 library lets through
# (it refuses NUL/CR/LF, upper case and connection headers): an HTTP/2 request goes upstream as
# HTTP/1.1 text when the upstream speaks that, where `:method "GET /admin"` became the request
# line `GET /admin /ok HTTP/1.1` and `:path "admin"` escaped every "/admin" path rule.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2
_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")  # a field name, as HTTP/2 has it
# origin-form: visible ASCII but '#' (RFC 9113 8.3.1; a fragment has no place in a request)
_TARGET: Final = re.compile(r"/[\x21\x22\x24-\x7e]*")
_VISIBLE: Final = re.compile(r"[\x21-\x7e]*")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # not field-content (RFC 9110 5.5)


def text_fields(fields: Any) -> list[tuple[str, str]]:
    """Received HTTP/2 fields as the str pairs the layers use: each byte one character
    (latin-1), as the HTTP/1.1 codec reads them, so any bytes pass through unchanged."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in fields or ()]


def wire_fields(fields: Any) -> list[tuple[bytes, bytes]]:
    """The fields to send over HTTP/2: latin-1 bytes (the inverse of `text_fields`; a
    character it cannot hold becomes '?', as in the HTTP/1.1 codec's heads)."""
    return [
        (name.encode("latin-1", "replace"), value.encode("latin-1", "replace"))
        for name, value in fields
    ]


def field_problem(fields: list[tuple[str, str]]) -> str | None:
    """What makes received HTTP/2 fields malformed (RFC 9113 8.2.1), as a message, or None: a
    name that is no lower-case token (pseudo-headers aside), a value with a control."""
    for name, value in fields:
        if not name.startswith(":") and not _NAME.fullmatch(name):
            return f"invalid header name {name[:64]!r}"
        if _CONTROL.search(value):
            return f"control character in header {name[:64]!r}"
    return None


def head_problem(
    method: str, target: str, authority: str, fields: list[tuple[str, str]]
) -> ProxyError | None:
    """Why an HTTP/2 request head (its pseudo-header values, and all its fields) cannot be
    forwarded: a 400 or 405; None if it can."""
    for name, value in fields:
        if not name.startswith(":") and not _TOKEN.fullmatch(name):
            return BadRequest(f"invalid header name {name[:64]!r}")
        if _CONTROL.search(value):
            return BadRequest(f"control character in header {name[:64]!r}")
    if method == "CONNECT":
        return BadRequest("CONNECT tunnels are not supported", status=405)
    if not _TOKEN.fullmatch(method):
        return BadRequest("invalid method")
    if not (_TARGET.fullmatch(target) or (target == "*" and method == "OPTIONS")):
        return BadRequest("invalid request target")
    if not _VISIBLE.fullmatch(authority):
        return BadRequest("invalid authority")
    return None


class StreamReset(DownstreamError):
    """The peer reset the stream (RST_STREAM) or the connection went away."""

    status = 499
    reason = "stream_reset"


class H2Body:
    """A one-shot `BodyStream` of one HTTP/2 stream; each read acknowledges its bytes.

    The connection feeds it (`feed`, `feed_eof`, `fail`); `ack(n)` returns n bytes of flow-control
    window to the sender once the consumer has taken them, so a slow reader stalls only its stream.
    """

    __slots__ = (
        "__weakref__",
        "_ack",
        "_chunks",
        "_eof",
        "_error",
        "_length",
        "_on_drop",
        "_timeout_error",
        "_waiter",
        "finished",
        "idle_timeout_s",
    )

    def __init__(
        self,
        length: int | None,
        ack: Callable[[int], None],
        *,
        idle_timeout_s: float | None = None,
        timeout_error: Callable[[], BaseException] = lambda: StreamReset("body idle timeout"),
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self._length = length
        self._ack = ack
        self._chunks: deque[bytes] = deque()
        self._error: BaseException | None = None
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._timeout_error = timeout_error
        self._on_drop = on_drop
        self.idle_timeout_s = idle_timeout_s
        self.finished = False

    @property
    def length(self) -> int | None:
        return self._length

    @property
    def eof_received(self) -> bool:
        return self._eof

    def feed(self, data: bytes, flow_len: int) -> None:
        """Queue `data` (`flow_len` counts padding too: what to acknowledge when read)."""
        if flow_len and not data:
            self._ack(flow_len)  # padding only: nothing for the consumer to take
            return
        if data:
            self._chunks.append(data)
            if flow_len > len(data):
                self._ack(flow_len - len(data))
            self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self._eof and self._error is None:
            self._error = exc
            self._wake()

    def take_buffered(self) -> bytes:
        """Everything queued so far (acknowledged); used when the stream already ended."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        if data:
            self._ack(len(data))
        self.finished = self._eof
        return data

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(self._timeout_error())

    async def read(self) -> bytes:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._ack(len(chunk))
                return chunk
            if self._error is not None:
                raise self._error
            if self._eof:
                self.finished = True
                return b""
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._waiter = waiter
            timer = None
            if self.idle_timeout_s is not None:
                timer = loop.call_later(self.idle_timeout_s, self._time_out, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def __del__(self) -> None:
        if not self.finished and self._on_drop is not None:
            self._on_drop()


def response_headers(response: Response, method: str) -> list[tuple[str, str]]:
    """The HTTP/2 header block for `response` (lower-case, no connection-specific fields)."""
    status = response.status
    out = [(":status", str(status))]
    lengthless = status == 204 or status < 200  # (RFC 9110 8.6: no Content-Length)
    for name, value in response.headers:
        if name in H2_HOP_BY_HOP or name == "te":
            continue
        if name == "content-length" and (lengthless or not isinstance(response.body, bytes)):
            continue
        out.append((name, value))
    body = response.body
    if isinstance(body, bytes) and body and method != "HEAD" and not lengthless:
        if not any(n == "content-length" for n, _ in out):
            out.append(("content-length", str(len(body))))
    return out


class H2ServerConnection(asyncio.Protocol):
    """One downstream HTTP/2 connection; quacks like the codec's connection for HttpServer."""

    def __init__(
        self,
        server: Any,
        transport: Any,
        *,
        peer: str,
        peer_identity: str,
        original_dst: str = "",  # before an iptables REDIRECT (transparent capture)
    ) -> None:
        self._server = server  # sidecar.codec.HttpServer (not imported: codec imports us)
        self._config = server.config
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._peer = peer
        self.peer_identity = peer_identity
        self._original_dst = original_dst
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,  # bytes: decoded by text_fields (UTF-8 failed on \xff)
            validate_outbound_headers=False,  # built by us from validated, lower-case fields
            normalize_outbound_headers=False,
        )
        self._h2 = h2.connection.H2Connection(config)
        self._bodies: dict[int, H2Body] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._window_waiters: dict[int, asyncio.Future[None]] = {}
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._closed = False
        self._draining = False
        self._pending: list[tuple[int, list[tuple[str, str]]]] = []
        self._flush_scheduled = False
        self.last_active = self._loop.time()
        self.streams_total = 0
        self._opened = 0  # streams the client opened on this connection
        self._premature_resets = 0  # of them, reset by the client before their answer
        self._owed_acks = 0  # PING/SETTINGS ACKs queued since the write buffer filled

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    # -- set-up ---------------------------------------------------------------------------

    def _local_settings(self) -> None:
        self._h2.update_settings(
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: _MAX_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
            }
        )

    def start(self, data: bytes) -> None:
        """Take over after the codec saw the client preface in `data`."""
        self._transport.set_protocol(self)
        self._h2.initiate_connection()
        self._local_settings()
        self._h2.increment_flow_control_window(_CONNECTION_WINDOW)
        self._flush()
        self.data_received(data)

    def start_upgrade(self, settings: str, request: Request, rest: bytes) -> None:
        """Take over after an `Upgrade: h2c` request (bodiless): it becomes stream 1."""
        self._transport.set_protocol(self)
        self._transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
        )
        self._h2.initiate_upgrade_connection(settings.encode("ascii", "replace"))
        self._local_settings()
        self._h2.increment_flow_control_window(_CONNECTION_WINDOW)
        self._flush()
        self._spawn(1, request)
        if rest:
            self.data_received(rest)

    # -- transport callbacks --------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # pragma: no cover - handed over
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connection_closed(self)
        gone = StreamReset("downstream closed the connection")
        for body in self._bodies.values():
            body.fail(gone)
        for task in self._tasks.values():
            task.cancel()
        for waiter in self._window_waiters.values():
            if not waiter.done():
                waiter.set_exception(gone)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(gone)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._owed_acks = 0
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_active = self._loop.time()
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.info("h2 protocol error from downstream", extra={"error": str(exc)[:200]})
            self._flush_now()  # h2 queued a GOAWAY
            self.close()
            return
        for event in events:
            self._on_event(event)
            if self._closed or self._transport.is_closing():
                return  # (closed by one of them: Rapid Reset)
        for stream_id, headers in self._pending:  # after the batch: END_STREAM may be in it
            if stream_id in self._bodies:  # (not reset in the same batch)
                self._dispatch(stream_id, headers)
        self._pending.clear()
        self._flush()

    def _on_event(self, event: h2.events.Event) -> None:
        if self._write_paused and isinstance(
            event, h2.events.PingReceived | h2.events.RemoteSettingsChanged
        ):
            self._owed_acks += 1
            if self._owed_acks > _MAX_OWED_ACKS:
                self._close_flooded(
                    "h2 client sends PINGs or SETTINGS without reading their ACKs: closing"
                )
                return
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            headers = text_fields(event.headers)
            self._bodies[event.stream_id] = self._new_body(event.stream_id, headers)
            self._pending.append((event.stream_id, headers))
            self._opened += 1
        elif isinstance(event, h2.events.DataReceived):
            body = self._bodies.get(event.stream_id or 0)
            if body is not None:
                body.feed(event.data or b"", event.flow_controlled_length or 0)
            elif event.stream_id and event.flow_controlled_length:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            body = self._bodies.get(event.stream_id or 0)
            if body is not None:
                body.feed_eof()
        elif isinstance(event, h2.events.StreamReset):
            if (event.stream_id or 0) in self._bodies:  # (its answer not complete yet)
                self._premature_resets += 1
                if self._opened >= _RESET_MIN_STREAMS and 2 * self._premature_resets > self._opened:
                    self._calm_down()
                    return
            self._reset_stream(event.stream_id or 0)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._wake_windows()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._draining = True
            if not self._tasks:
                self.close()

    def _reset_stream(self, stream_id: int) -> None:
        body = self._bodies.pop(stream_id, None)
        if body is not None:
            body.fail(StreamReset("downstream reset the stream"))
        task = self._tasks.get(stream_id)
        if task is not None:
            task.cancel()
        waiter = self._window_waiters.get(stream_id)
        if waiter is not None and not waiter.done():
            waiter.set_exception(StreamReset("downstream reset the stream"))

    def _new_body(self, stream_id: int, headers: list[tuple[str, str]]) -> H2Body:
        length = None
        for name, value in headers:
            if name == "content-length":
                length = parse_digits(value, 19)

        def ack(n: int) -> None:
            if self._closed:
                return
            try:
                self._h2.acknowledge_received_data(n, stream_id)
            except h2.exceptions.StreamClosedError:
                return
            self._flush()

        return H2Body(length, ack, idle_timeout_s=self._config.body_timeout_s)

    # -- requests -------------------------------------------------------------------------

    def _dispatch(self, stream_id: int, headers: list[tuple[str, str]]) -> None:
        if self._draining:  # after our GOAWAY: the client may safely retry it elsewhere
            self._bodies.pop(stream_id, None)
            self._send_reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        body_stream = self._bodies[stream_id]
        method = target = authority = ""
        scheme = "http"
        out: list[tuple[str, str]] = []
        request_id = forwarded = ""
        for name, value in headers:
            if name.startswith(":"):
                if name == ":method":
                    method = value
                elif name == ":path":
                    target = value
                elif name == ":authority":
                    authority = value
                elif name == ":scheme":
                    scheme = value
            elif name == "x-forwarded-for":
                forwarded = value
            else:
                if name == "x-request-id":
                    request_id = value
                elif name == "host" and not authority:
                    authority = value
                out.append((name, value))
        if not request_id:
            request_id = _new_request_id()
            out.append(("x-request-id", request_id))
        if self._config.forwarded_for and self._peer:
            forwarded = f"{forwarded}, {self._peer}" if forwarded else self._peer
        if forwarded:
            out.append(("x-forwarded-for", forwarded))
        body: Body = body_stream
        if body_stream.eof_received:
            body = body_stream.take_buffered()  # whole body already here: replayable
        context = RequestContext(
            direction=self._config.direction,
            request_id=request_id,
            downstream_addr=self._peer,
            peer_identity=self.peer_identity,
            original_dst=self._original_dst,
        )
        refused = head_problem(method, target, authority, headers)
        if refused is None:
            target = normalize_target(target, self._config.path_normalization)
        request = Request(method, target, tuple(out), body, authority, scheme, "2", context)
        self._spawn(stream_id, request, refused)

    def _spawn(self, stream_id: int, request: Request, refused: ProxyError | None = None) -> None:
        if stream_id not in self._bodies:
            body = H2Body(0, lambda n: None)
            body.feed_eof()
            self._bodies[stream_id] = body
        task = self._loop.create_task(self._serve(stream_id, request, refused), name="h2-stream")
        self._tasks[stream_id] = task
        self.streams_total += 1

    async def _serve(self, stream_id: int, request: Request, refused: ProxyError | None) -> None:
        try:
            try:
                if refused is not None:  # (a head the app must not see: answered here)
                    raise refused
                response = await self._server.current_handler()(request)
            except ProxyError as exc:  # normally mapped by the stack's proxy_errors layer
                response = error_response(exc)
            await self._respond(stream_id, request.method, response)
        except (StreamReset, h2.exceptions.ProtocolError):
            pass  # the stream or connection was closed under us: nobody to answer
        except asyncio.CancelledError:
            if not self._closed:
                self._send_reset(stream_id)
        except Exception:
            # Stream task boundary: one failing exchange must not take the connection down.
            logger.exception("h2 stream failed", extra={"target": request.target[:200]})
            self._send_reset(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        finally:
            self._tasks.pop(stream_id, None)
            self._bodies.pop(stream_id, None)
            self._window_waiters.pop(stream_id, None)
            self._server.requests_total += 1
            self.last_active = self._loop.time()
            if self._draining and not self._tasks:
                self.close()

    async def _respond(self, stream_id: int, method: str, response: Response) -> None:
        body = response.body
        headers = wire_fields(response_headers(response, method))
        no_body = method == "HEAD" or response.status in _NO_BODY_STATUSES
        if isinstance(body, bytes) and (not body or no_body) and not _trailers(response):
            self._h2.send_headers(stream_id, headers, end_stream=True)
            self._flush()
            return
        self._h2.send_headers(stream_id, headers)
        self._flush()
        if isinstance(body, bytes):
            if not no_body:
                await self._send(stream_id, body)
        elif not await self._stream(stream_id, body):
            return
        trailers = _trailers(response)
        if trailers:
            self._h2.send_headers(stream_id, wire_fields(trailers), end_stream=True)
        else:
            self._h2.end_stream(stream_id)
        self._flush()

    async def _stream(self, stream_id: int, body: BodyStream) -> bool:
        """Copy a streamed body; False (stream reset) when it broke off."""
        try:
            while chunk := await body.read():
                await self._send(stream_id, chunk)
        except ProxyError as exc:
            # Headers are gone: resetting the stream is the honest signal (not END_STREAM).
            logger.info("h2 response body cut short", extra={"reason": exc.reason})
            self._send_reset(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return False
        return True

    async def _send(self, stream_id: int, data: bytes) -> None:
        """Send `data` on the stream as the peer's flow-control windows allow."""
        view = memoryview(data)
        while view:
            window = min(
                self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
            )
            if window <= 0:
                waiter = self._loop.create_future()
                self._window_waiters[stream_id] = waiter
                try:
                    async with asyncio.timeout(self._config.body_timeout_s):
                        await waiter
                finally:
                    self._window_waiters.pop(stream_id, None)
                continue
            self._h2.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self._flush()
            if self._write_paused:
                await self._drain()

    def _wake_windows(self) -> None:
        for waiter in self._window_waiters.values():
            if not waiter.done():
                waiter.set_result(None)

    def _send_reset(
        self, stream_id: int, code: h2.errors.ErrorCodes = h2.errors.ErrorCodes.CANCEL
    ) -> None:
        try:
            self._h2.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:  # the stream or the connection is already closed
            return
        self._flush()

    async def _drain(self) -> None:
        waiter = self._loop.create_future()
        self._drain_waiter = waiter
        try:
            async with asyncio.timeout(self._config.body_timeout_s):
                await waiter
        finally:
            self._drain_waiter = None

    def _flush(self) -> None:
        """Write what h2 has queued at the end of this loop iteration: one write for many frames."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and not self._closed and not self._transport.is_closing():
            self._transport.write(data)

    # -- lifecycle (HttpServer's connection interface) --------------------------------------

    def start_drain(self) -> None:
        """GOAWAY: streams in flight finish; the connection closes after the last one."""
        self._draining = True
        if not self._tasks:
            self.close()
        elif not self._closed:
            # h2's close_connection() would stop the streams in flight from answering: announce
            # the last stream we take with a raw GOAWAY and keep the state machine open.
            last = self._h2.highest_inbound_stream_id
            frame = hyperframe.frame.GoAwayFrame(stream_id=0)
            frame.last_stream_id = last
            self._flush_now()
            self._transport.write(frame.serialize())

    def close(self) -> None:
        if not self._closed and not self._transport.is_closing():
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.close_connection()
                self._flush_now()
            self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def _calm_down(self) -> None:
        self._close_flooded(
            "h2 client reset most of its streams before their answer (Rapid Reset): closing"
        )

    def _close_flooded(self, why: str) -> None:
        """GOAWAY ENHANCE_YOUR_CALM (when it still fits) and close."""
        logger.warning(
            why,
            extra={"peer": self._peer, "streams": self._opened, "resets": self._premature_resets},
        )
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._flush_now()
        self._transport.close()


def _trailers(response: Response) -> Headers:
    trailers = response.trailers
    return trailers.fields if trailers is not None else ()


def _new_request_id() -> str:
    return str(uuid.uuid4())
