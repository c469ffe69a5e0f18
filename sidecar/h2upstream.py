"""The HTTP/2 terminal handler: per endpoint, pooled h2 connections multiplexing streams.

A stream per request on a connection with room under the peer's MAX_CONCURRENT_STREAMS (else a
new connection); GOAWAY retires a connection (new streams go to a fresh one), RST_STREAM and
lost connections become `UpstreamReset`. Trailers come back on `Response.trailers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from sidecar.errors import (
    NoHealthyUpstream,
    ProxyError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from sidecar.h2server import H2_HOP_BY_HOP, H2Body, field_problem, text_fields, wire_fields
from sidecar.http import Body, Endpoint, Request, Response, Trailers, parse_digits
from sidecar.loops import OutgoingConnections
from sidecar.protocols import PROTOCOLS, protocol_terminal
from sidecar.stack import Clock, monotonic
from sidecar.upstream import dial

__all__ = ["PROTOCOLS", "H2Pool", "H2PoolConfig", "protocol_terminal"]


logger = logging.getLogger(__name__)

_STREAM_WINDOW = 1 << 20
_CONNECTION_WINDOW = 1 << 24


def _status_problem(fields: list[tuple[str, str]]) -> str | None:
    """What is wrong with a final response head's :status, or None (one, three ASCII digits,
    200-599). The h2 library's inbound validation is off: ":status: abc" raised ValueError
    from int() (a 502 "internal proxy error" with a logged traceback per response) and 600
    went on to an HTTP/1.1 client, where the HTTP/1.1 upstream path refuses it."""
    statuses = [value for name, value in fields if name == ":status"]
    if len(statuses) != 1:
        return f"{len(statuses)} :status fields in a response"
    code = parse_digits(statuses[0], 3)
    if code is None or len(statuses[0]) != 3 or not 200 <= code <= 599:
        return f"status {statuses[0][:16]!r} is not 200-599"
    return None


@dataclass(frozen=True, slots=True)
class H2PoolConfig:
    """Limits and backstop timeouts of the HTTP/2 pool."""

    max_connections_per_endpoint: int = 8
    response_timeout_s: float = 300.0  # wait for response headers when no deadline is set
    write_timeout_s: float = 60.0  # peer not opening its flow-control window for our body
    idle_expiry_s: float = 30.0  # an idle connection is closed (below servers' idle timeouts)

    def __post_init__(self) -> None:
        if self.max_connections_per_endpoint < 1:
            raise ValueError("max_connections_per_endpoint must be >= 1")
        if min(self.response_timeout_s, self.write_timeout_s, self.idle_expiry_s) <= 0:
            raise ValueError("timeouts must be > 0")


_SPEAKS_HTTP1: Final = (
    "the upstream answered in HTTP/1.x: it does not speak HTTP/2 here "
    "(set this upstream's protocol to http1)"
)


class _Stream:
    __slots__ = ("body", "error", "headers", "pump", "trailers", "waiter")

    def __init__(self, body: H2Body) -> None:
        self.body = body
        self.headers: list[tuple[str, str]] | None = None
        self.trailers = Trailers()
        self.error: ProxyError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.pump: asyncio.Task[None] | None = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One upstream HTTP/2 connection carrying many streams."""

    def __init__(self, pool: H2Pool, key: tuple[str, int, str]) -> None:
        self.pool = pool
        self.key = key
        self.transport: Any = None
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,  # bytes: decoded by text_fields (UTF-8 failed on \xff)
            validate_outbound_headers=False,  # built by us from validated, lower-case fields
            normalize_outbound_headers=False,
            validate_inbound_headers=False,  # the upstream's response; costly per stream
        )
        self.h2 = h2.connection.H2Connection(config)
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self.goaway = False
        self._window_waiters: dict[int, asyncio.Future[None]] = {}
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._flush_scheduled = False
        self._heard = False  # any bytes from the upstream yet
        self.idle_since = pool.now()

    @property
    def usable(self) -> bool:
        if self.closed or self.goaway:
            return False
        if not self.streams and self.pool.now() - self.idle_since > self.pool.config.idle_expiry_s:
            self.close()  # the server may be closing it as we pick it: dial a fresh one
            self.pool.forget(self)
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        return self.h2.open_outbound_streams < limit

    # -- transport ------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.h2.initiate_connection()
        self.h2.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            }
        )
        self.h2.increment_flow_control_window(_CONNECTION_WINDOW)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        for stream in list(self.streams.values()):
            self._fail(stream, UpstreamReset("upstream connection closed"))
        self.streams.clear()
        self._wake_windows(UpstreamReset("upstream connection closed"))
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(UpstreamReset("upstream closed while sending"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self._heard and data.startswith(b"HTTP/1."):
            # an HTTP/1.x server answering our preface (with a 400, then closing): name it,
            # instead of the frame error or the close that would follow
            self._heard = True
            self._refuse(UpstreamProtocolError(_SPEAKS_HTTP1))
            return
        self._heard = True
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._refuse(UpstreamProtocolError(f"bad HTTP/2 from upstream: {exc}"))
            return
        for event in events:
            self._on_event(event)
        self.flush()

    def _refuse(self, error: ProxyError) -> None:
        """Fail every stream with `error` and drop the connection."""
        for stream in list(self.streams.values()):
            self._fail(stream, error)
        self.flush_now()
        self.abort()

    def _on_event(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None) or 0
        stream = self.streams.get(sid)
        if isinstance(event, h2.events.ResponseReceived):
            if stream is not None:
                headers = self._fields(stream, event.headers)
                if headers is not None:
                    problem = _status_problem(headers)
                    if problem is not None:
                        error = UpstreamProtocolError(f"bad HTTP/2 from upstream: {problem}")
                        self._fail(stream, error)
                    else:
                        stream.headers = headers
                        stream.wake()
        elif isinstance(event, h2.events.DataReceived):
            if stream is not None:
                stream.body.feed(event.data or b"", event.flow_controlled_length or 0)
            elif event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.TrailersReceived):
            if stream is not None:
                trailers = self._fields(stream, event.headers)
                if trailers is not None:
                    stream.trailers.set(tuple(trailers))
        elif isinstance(event, h2.events.StreamEnded):
            if stream is not None:
                if not stream.trailers.received:
                    stream.trailers.set(())
                stream.body.feed_eof()
                self.done(sid)
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None:
                code = getattr(event.error_code, "name", str(event.error_code))
                self._fail(stream, UpstreamReset(f"upstream reset the stream ({code})"))
                self.done(sid)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._wake_windows(None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            self.pool.forget(self)
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for stream_id, pending in list(self.streams.items()):
                if stream_id > last:  # never processed: safe to send again
                    self._fail(pending, UpstreamReset("upstream sent GOAWAY"))
                    self.done(stream_id)
            if not self.streams:
                self.close()

    def _fields(self, stream: _Stream, raw: Any) -> list[tuple[str, str]] | None:
        """A head's or trailers' fields as text, or None with `stream` failed: inbound
        validation is off (costly per stream), so CR/LF or another control, which would go
        into an HTTP/1.1 client's response head, is checked here, as llhttp checks it (the
        exchange, failed, resets the stream)."""
        fields = text_fields(raw)
        problem = field_problem(fields)
        if problem is None:
            return fields
        self._fail(stream, UpstreamProtocolError(f"bad HTTP/2 from upstream: {problem}"))
        return None

    def _fail(self, stream: _Stream, error: ProxyError) -> None:
        stream.error = error
        stream.body.fail(error)
        if stream.waiter is not None and not stream.waiter.done():
            stream.waiter.set_exception(error)
        if stream.pump is not None:
            stream.pump.cancel()

    def done(self, sid: int) -> None:
        """The stream is over on the wire (its body and trailers are with their consumer)."""
        self.streams.pop(sid, None)
        if not self.streams:
            self.idle_since = self.pool.now()
            if self.goaway:
                self.close()

    def _wake_windows(self, error: ProxyError | None) -> None:
        for waiter in self._window_waiters.values():
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    def flush(self) -> None:
        """Write what h2 has queued at the end of this loop iteration: one write for many frames."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_now)

    def flush_now(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
                self.flush_now()
            self.transport.close()

    # -- one exchange ---------------------------------------------------------------------

    def open_stream(self, request: Request, endpoint: Endpoint, tls: bool) -> tuple[int, _Stream]:
        sid = self.h2.get_next_available_stream_id()

        def ack(n: int) -> None:
            if self.closed:
                return
            with contextlib.suppress(h2.exceptions.StreamClosedError, KeyError):
                self.h2.acknowledge_received_data(n, sid)
                self.flush()

        def drop() -> None:  # the consumer left the body unread: stop the stream
            self.streams.pop(sid, None)
            if not self.closed:
                with contextlib.suppress(h2.exceptions.StreamClosedError, KeyError):
                    self.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    self.flush()

        stream = _Stream(
            H2Body(
                None,
                ack,
                idle_timeout_s=request.context.idle_timeout_s,
                timeout_error=lambda: UpstreamTimeout("upstream body idle timeout"),
                on_drop=drop,
            )
        )
        self.streams[sid] = stream
        body = request.body
        end = isinstance(body, bytes) and not body
        headers = wire_fields(_request_headers(request, endpoint, tls))
        self.h2.send_headers(sid, headers, end_stream=end)
        self.flush()
        if not end:
            stream.pump = asyncio.get_running_loop().create_task(
                self._pump(sid, stream, body), name="h2-request-body"
            )
        return sid, stream

    async def _pump(self, sid: int, stream: _Stream, body: Body) -> None:
        try:
            if isinstance(body, bytes):
                await self._send(sid, body)
            else:
                while chunk := await body.read():
                    await self._send(sid, chunk)
            if not self.closed:
                self.h2.end_stream(sid)
                self.flush()
        except ProxyError as exc:
            # The downstream body broke: the upstream must not see a truncated request as whole.
            self._fail(stream, exc)
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                self.flush()
        except h2.exceptions.StreamClosedError:
            return  # the upstream answered and closed its side early: nothing more to send

    async def _send(self, sid: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.closed:
                raise UpstreamReset("upstream connection closed")
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                waiter = asyncio.get_running_loop().create_future()
                self._window_waiters[sid] = waiter
                try:
                    async with asyncio.timeout(self.pool.config.write_timeout_s):
                        await waiter
                except TimeoutError as exc:
                    raise UpstreamTimeout("upstream flow-control window stayed closed") from exc
                finally:
                    self._window_waiters.pop(sid, None)
                continue
            self.h2.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self.flush()
            if self._write_paused:
                await self._drain()

    async def _drain(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiter = waiter
        try:
            async with asyncio.timeout(self.pool.config.write_timeout_s):
                await waiter
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream stopped reading") from exc
        finally:
            self._drain_waiter = None


class H2Pool:
    """The HTTP/2 terminal `Handler` (call it with a Request whose context names the endpoint)."""

    def __init__(
        self,
        config: H2PoolConfig | None = None,
        *,
        clock: Clock = monotonic,
        tls: Callable[[], ssl.SSLContext | None] | None = None,
        outgoing: OutgoingConnections | None = None,
    ) -> None:
        self.config = config or H2PoolConfig()
        self._outgoing = outgoing  # where each new connection is recorded (sidecar/loops.py)
        self._clock = clock
        self._tls = tls
        self._conns: dict[tuple[str, int, str], list[_Connection]] = {}
        self._connecting: dict[tuple[str, int, str], asyncio.Future[_Connection]] = {}
        self.opened = 0
        self.streams = 0

    async def __call__(self, request: Request) -> Response:
        endpoint = request.context.endpoint
        if endpoint is None:
            raise NoHealthyUpstream("no endpoint was selected for this request")
        conn = await self._connection(endpoint, request.context.connect_timeout_s)
        tls = conn.transport.get_extra_info("ssl_object") is not None
        try:
            sid, stream = conn.open_stream(request, endpoint, tls)
        except h2.exceptions.ProtocolError as exc:
            raise UpstreamReset(f"could not open a stream: {exc}") from exc
        self.streams += 1
        try:
            await self._wait_headers(stream, self._headers_timeout(request))
        except BaseException:
            conn.done(sid)
            if stream.pump is not None:
                stream.pump.cancel()
            if not conn.closed:
                with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                    conn.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    conn.flush()
            raise
        assert stream.headers is not None
        status = 0
        headers: list[tuple[str, str]] = []
        for name, value in stream.headers:
            if name == ":status":
                status = int(value)  # (checked on arrival: _status_problem)
            elif not name.startswith(":"):
                headers.append((name, value))
        body: Body = stream.body
        if stream.body.eof_received:
            body = stream.body.take_buffered()
            conn.done(sid)
        return Response(status, tuple(headers), body, trailers=stream.trailers)

    async def _wait_headers(self, stream: _Stream, timeout_s: float) -> None:
        if stream.error is not None:
            raise stream.error
        if stream.headers is not None:
            return
        stream.waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await stream.waiter
        except TimeoutError as exc:
            raise UpstreamTimeout(after_s=timeout_s) from exc
        finally:
            stream.waiter = None

    def _headers_timeout(self, request: Request) -> float:
        timeout = self.config.response_timeout_s
        deadline = request.context.deadline
        if deadline is not None:
            timeout = min(timeout, max(0.001, deadline - self._clock()))
        return timeout

    # -- pool -----------------------------------------------------------------------------

    async def _connection(self, endpoint: Endpoint, timeout_s: float) -> _Connection:
        key = (endpoint.host, endpoint.port, endpoint.identity)
        while True:
            conns = self._conns.get(key, [])
            for conn in list(conns):  # (usable may retire an expired one)
                if conn.usable:
                    return conn
            pending = self._connecting.get(key)
            if pending is not None:  # one dial per endpoint at a time; everyone shares it
                await asyncio.shield(pending)
                continue
            if len(conns) >= self.config.max_connections_per_endpoint:
                raise UpstreamReset(f"{endpoint.address}: every HTTP/2 connection is full")
            future: asyncio.Future[_Connection] = asyncio.get_running_loop().create_future()
            self._connecting[key] = future
            try:
                conn = await self._connect(endpoint, key, timeout_s)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-check and dial themselves
                raise
            finally:
                del self._connecting[key]
            future.set_result(conn)
            self._conns.setdefault(key, []).append(conn)
            return conn

    async def _connect(
        self, endpoint: Endpoint, key: tuple[str, int, str], timeout_s: float
    ) -> _Connection:
        conn = await dial(
            lambda: _Connection(self, key),
            endpoint,
            tls=self._mesh_tls(endpoint),
            timeout_s=timeout_s,
            outgoing=self._outgoing,
        )
        self.opened += 1
        return conn

    def _mesh_tls(self, endpoint: Endpoint) -> ssl.SSLContext | None:
        if not endpoint.identity or self._tls is None:
            return None
        context = self._tls()
        if context is None:
            raise UpstreamConnectError(f"no mesh certificate yet to reach {endpoint.identity}")
        return context

    def now(self) -> float:
        return self._clock()

    def forget(self, conn: _Connection) -> None:
        """Take a closed or GOAWAY'd connection out of rotation."""
        conns = self._conns.get(conn.key)
        if conns is not None and conn in conns:
            conns.remove(conn)

    async def close(self) -> None:
        for conns in list(self._conns.values()):
            for conn in list(conns):
                conn.close()
        self._conns.clear()

    def stats(self) -> dict[str, object]:
        return {
            "connections_opened": self.opened,
            "streams": self.streams,
            "open": {f"{h}:{p}": len(c) for (h, p, _), c in self._conns.items() if c},
        }


def _request_headers(request: Request, endpoint: Endpoint, tls: bool) -> list[tuple[str, str]]:
    out = [
        (":method", request.method),
        (":scheme", "https" if tls else "http"),
        (":authority", request.authority or endpoint.address),
        (":path", request.target or "/"),
    ]
    for name, value in request.headers:
        if name in H2_HOP_BY_HOP or name.startswith(":"):
            continue
        if name == "te" and value.strip().lower() != "trailers":
            continue
        out.append((name, value))
    body = request.body
    if not isinstance(body, bytes) and body.length is not None:  # (no Protocol isinstance)
        if not any(n == "content-length" for n, _ in out):
            out.append(("content-length", str(body.length)))
    return out
