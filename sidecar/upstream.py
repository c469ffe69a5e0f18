"""The terminal handler: pooled HTTP/1.1 connections to `request.context.endpoint`.

Serialises the request (streaming its body), parses the response with httptools and hands the
body back as a stream that returns the connection to the pool once fully read. Socket, parser and
timeout failures are translated here into `sidecar.errors`, and nowhere above.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import ssl
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar, cast

import httptools

from sidecar._native import mypyc_attr
from sidecar.codec import HOP_BY_HOP, ByteStream
from sidecar.errors import (
    NoHealthyUpstream,
    ProxyError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from sidecar.http import (
    FAST_RESPONSE,
    Body,
    BodyStream,
    DeadlineTimer,
    Endpoint,
    Request,
    RequestContext,
    Response,
    head_bytes,
    header_name,
    new_response,
)
from sidecar.loops import OutgoingConnections
from sidecar.stack import Clock, monotonic

__all__ = ["Connector", "UpstreamConfig", "UpstreamPool", "dial"]

logger = logging.getLogger(__name__)

_NO_BODY_STATUSES: Final = frozenset({204, 304})
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
# request headers not copied upstream: hop-by-hop, and those _serialise_head writes itself
_NOT_FORWARDED: Final = HOP_BY_HOP | {"host", "content-length"}


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Connection pool limits and backstop timeouts."""

    max_idle_per_endpoint: int = 64
    idle_expiry_s: float = 4.0  # below common app keep-alive timeouts (node 5 s)
    response_timeout_s: float = 300.0  # wait for response headers when no deadline is set
    write_timeout_s: float = 60.0  # upstream not reading the request body we stream to it
    high_water_bytes: int = 256 * 1024
    # a response head longer is a 502 (Envoy: max_response_headers_kb, 60 KiB): an app, or any
    # server reached by passthrough, sending one header value without end grew us without bound
    max_response_head_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.max_idle_per_endpoint < 0:
            raise ValueError("max_idle_per_endpoint must be >= 0")
        if self.max_response_head_bytes <= 0:
            raise ValueError("max_response_head_bytes must be > 0")
        if min(self.idle_expiry_s, self.response_timeout_s, self.write_timeout_s) <= 0:
            raise ValueError("timeouts must be > 0")


# (protocol_factory, host, port) -> (transport, protocol), like loop.create_connection
Connector = Callable[[Callable[[], Any], str, int], Awaitable[tuple[Any, Any]]]


class _Stale(Exception):
    """A reused connection died before answering; the request may be sent again."""


@mypyc_attr(native_class=False)  # compiled classes take no weak references
class _ResponseBody(ByteStream):
    """Response body stream; dropping it unread closes the connection it holds."""

    __slots__ = ("__weakref__", "_conn")

    def __init__(self, conn: _Connection, length: int | None, idle_timeout_s: float | None):
        super().__init__(
            length,
            pause=conn.pause_reading,
            resume=conn.resume_reading,
            high_water=conn.high_water,
            idle_timeout_s=idle_timeout_s,
            timeout_error=lambda: UpstreamTimeout("upstream body idle timeout"),
        )
        self._conn = conn

    def __del__(self) -> None:
        if not self.eof_received:
            self._conn.abort()


class _Connection(asyncio.Protocol):
    """One upstream connection; runs one exchange at a time."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int, str]) -> None:
        self.pool = pool
        self.key = key
        self.high_water = pool.config.high_water_bytes
        self._head_limit = pool.config.max_response_head_bytes
        self.transport: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None  # cached: see wait_headers
        self.closed = False
        self.uses = 0
        self.idle_since = 0.0
        self._parser: Any = None
        # the last response's parser when that response ended cleanly on a kept-alive
        # connection (llhttp is then at a message start): the next exchange parses with it
        self._spare: Any = None
        self._head_method = ""
        self._headers_waiter: asyncio.Future[None] | None = None
        self._wait_s = 0.0  # the pending header wait's timeout, when the deadline timer ends it
        self._error: ProxyError | None = None
        self._head_error: ProxyError | None = None  # why on_headers_complete refused the head
        self._head_bytes = 0  # read while the response head is not complete
        self._field_bytes = 0  # of the head's fields (both bounded by max_response_head_bytes)
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.headers_done = False
        self.complete = False
        self.received_any = False
        self._extra = False
        self._early: list[bytes] = []
        self._body_ref: weakref.ref[_ResponseBody] | None = None
        self.tunnel: _ResponseBody | None = None
        self.pump: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.taken = False
        self._reusable = False
        self._keep_alive = False
        self._close_delimited = False
        # the exchange's request context, and its response when that went downstream as it
        # arrived (_write_through)
        self.context: RequestContext | None = None
        self.response: Response | None = None

    # -- transport ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.set_write_buffer_limits(high=self.high_water)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tunnel is not None:
            self.tunnel.feed_eof()
        elif self._close_delimited and not self.complete:
            self.complete = True  # the body of a response without length ends at EOF
            body = self._body()
            if body is not None:
                body.feed_eof()
        elif not self.headers_done:
            self._fail(UpstreamReset("upstream closed before responding"))
        elif not self.complete:
            body = self._body()
            if body is not None:
                body.fail(UpstreamReset("upstream closed mid-body"))
            elif not self.taken:  # the head is in, the exchange has not taken it up yet
                self._fail(UpstreamReset("upstream closed mid-body"))
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(UpstreamReset("upstream closed while sending"))
        if self.pump is not None:
            self.pump.cancel()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_reading(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.feed(data)
            return
        if self.status == 101:
            self._early.append(data)  # tunnel bytes arriving before the tunnel is set up
            return
        parser = self._parser
        if parser is None or self.complete:
            self.abort()  # bytes nobody asked for: the connection is not reusable
            return
        if not self.received_any and FAST_RESPONSE is not None and self._head_method != "HEAD":
            # the whole response in its first read, its head a common one (sidecar/_h1fast.c):
            # taken in one call as the callbacks below would take it; else httptools reads it
            parsed = FAST_RESPONSE(data, self._head_limit)
            if parsed is not None:
                self._take_whole(parsed[0], parsed[1], parsed[2], parsed[3])
                return
        self.received_any = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = data[int(upgrade.args[0]) :]
            if rest:
                self._early.append(rest)
        except httptools.HttpParserError as exc:
            if not self.complete:
                error = self._head_error or UpstreamProtocolError(f"bad upstream response: {exc}")
                self._protocol_error(error)
                return
            # a whole response, then bytes that are none: the response stands, the connection
            # does not (it is closed once the response is taken)
            self._extra = True
        if not self.headers_done:  # (the whole read was head: bound it, as the codec does)
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit:
                self._protocol_error(self._bad_head(self._too_long()))
                return
        if self.complete and not self.taken and self.status >= 200:  # (not a 101's tunnel)
            self._write_through()
        if self.headers_done:
            self._wake()
        if self.complete and self.status != 101:
            self._finish()

    def _take_whole(
        self, status: int, headers: list[tuple[str, str]], body: bytes, keep_alive: bool
    ) -> None:
        """A whole response (a Content-Length or a chunked body), parsed in one call: the state
        on_headers_complete, on_body and on_message_complete leave (its parser, never fed,
        stays at a message start)."""
        self.received_any = True
        self.headers = headers
        self.status = status
        self.headers_done = True
        self._keep_alive = keep_alive
        self._close_delimited = False
        if body:
            self._early.append(body)
        self.complete = True
        self._write_through()
        self._wake()
        self._finish()

    def _write_through(self) -> None:
        """The whole response just taken goes downstream now, when the request's context
        offers that (RequestContext.write_final) and says it is final (`final`): the
        exchange's task, woken after, returns this same response to the layers, whose work on
        it then runs after it was written."""
        context = self.context
        if context is None:
            return
        write, final = context.write_final, context.final
        if write is None or final is None:
            return
        try:
            # (the body's bytes as take_body joins them: one piece, or none, from _take_whole)
            response = new_response(self.status, _response_headers(self), b"".join(self._early))
            if final(response):
                self.response = response
                context.write_final = None  # (done: the route knows its response was final)
                write(context, response)
        except Exception:  # (the exchange goes on as if not written: the codec writes it then)
            self.response = None
            logger.exception("writing a response as it arrived failed")

    async def drain(self) -> None:
        """Wait until the upstream takes more bytes (bounded by the write timeout)."""
        if self._write_paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiter = waiter
            timeout_s = self.pool.config.write_timeout_s
            try:
                async with asyncio.timeout(timeout_s):
                    await waiter
            except TimeoutError as exc:
                raise UpstreamTimeout(f"upstream stopped reading for {timeout_s:g}s") from exc
            finally:
                self._drain_waiter = None

    # -- exchange -------------------------------------------------------------------------

    def begin(self, method: str, context: RequestContext | None = None) -> None:
        self.context = context
        self.response = None
        parser = self._spare
        if parser is None:
            parser = httptools.HttpResponseParser(self)
        else:
            self._spare = None
        self._parser = parser
        self._head_method = method
        self._headers_waiter = None
        self._error = None
        self._head_error = None
        self._head_bytes = self._field_bytes = 0
        self.status = 0
        self.headers = []
        self.headers_done = self.complete = self.received_any = self._extra = False
        self._early = []
        self._body_ref = None
        self.taken = False
        self._reusable = False
        self._keep_alive = False
        self._close_delimited = False
        self.uses += 1

    async def wait_headers(self, timeout_s: float, shared: DeadlineTimer | None = None) -> None:
        """Wait `timeout_s` for the response head; `shared`: the request's deadline timer, due
        when this wait ends, which then ends it (one timer per request instead of two)."""
        if self._error is not None:
            raise self._error
        if self.headers_done:
            return
        loop = self._loop
        if loop is None:  # once per connection: get_running_loop() costs a getpid() syscall
            loop = self._loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._headers_waiter = waiter
        if shared is not None:
            self._wait_s = timeout_s
            shared.expire = self._expire
            try:
                await waiter
            finally:
                shared.expire = None
                self._headers_waiter = None
        else:
            timer = loop.call_later(timeout_s, self._time_out, waiter, timeout_s)
            try:
                await waiter
            finally:
                timer.cancel()
                self._headers_waiter = None
        # failed after the head woke this wait, before it resumed (read through a call: the
        # check on entry narrowed the attribute to None, which compiled code would enforce)
        error = self._failure()
        if error is not None:
            raise error

    def _failure(self) -> ProxyError | None:
        return self._error

    def _time_out(self, waiter: asyncio.Future[None], timeout_s: float) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeout(after_s=timeout_s))

    def _expire(self) -> bool:
        """The shared deadline timer fired: fail a pending wait as its own timer would have."""
        waiter = self._headers_waiter
        if waiter is None or waiter.done():
            return False
        waiter.set_exception(UpstreamTimeout(after_s=self._wait_s))
        return True

    def _wake(self) -> None:
        waiter = self._headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: ProxyError) -> None:
        self._error = error
        waiter = self._headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _protocol_error(self, error: ProxyError) -> None:
        # a body being read fails; otherwise (no head yet, or a head the exchange has not taken
        # up) the exchange does, before any of the response went downstream
        body = self._body()
        if body is not None:
            body.fail(error)
        else:
            self._fail(error)
        self.abort()

    def _body(self) -> _ResponseBody | None:
        return self._body_ref() if self._body_ref is not None else None

    def take_body(self, idle_timeout_s: float | None) -> Body:
        """The response body: bytes when already complete, else a stream owning this conn."""
        self.taken = True
        self.context = None
        if self.complete or self.status in _NO_BODY_STATUSES or self._head_method == "HEAD":
            data = b"".join(self._early)
            if not self.complete:
                self.close()  # a bodiless response that the parser did not see end
            elif self._reusable:
                self.pool.release(self)
            else:
                self.close()
            return data
        length = None
        for name, value in self.headers:
            if name == "content-length":
                length = int(value)
        stream = _ResponseBody(self, length, idle_timeout_s)
        for chunk in self._early:
            stream.feed(chunk)
        self._early = []
        self._body_ref = weakref.ref(stream)
        return stream

    def _finish(self) -> None:
        """The response is complete: back to the pool if the connection can carry another."""
        body = self._body()
        if body is not None:
            body.feed_eof()
        reusable = (
            not self._extra
            and self._keep_alive
            and (self.pump is None or self.pump.done())
            and self.status != 101
        )
        if reusable and self._head_method != "HEAD" and not self._close_delimited:
            self._spare = self._parser  # (a HEAD response's parser still expects its body)
        self._parser = None
        if not self.taken:
            self._reusable = reusable  # settled once the exchange has read status and headers
        elif reusable:
            self.pool.release(self)
        else:
            self.close()

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self._extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # a trailer field (after a chunked body): not merged into the head, dropped
        self._field_bytes += len(name) + len(value) + 4
        if self._field_bytes > self._head_limit:  # (a long head read whole in one go)
            raise self._bad_head(self._too_long())
        self.headers.append((header_name(name), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = int(self._parser.get_status_code())
        if not 100 <= status <= 599:  # (RFC 9110 15; httptools reads any three digits, "099" too)
            raise self._bad_head(f"bad upstream response: status {status} is not 100-599")
        if status < 200 and status != 101:
            self.headers = []  # interim response (e.g. 103): wait for the final one
            return
        framed = False  # by a length or chunked
        codings = ""
        for name, value in self.headers:
            if name == "content-length":
                framed = True
            elif name == "transfer-encoding":
                codings = f"{codings},{value}" if codings else value
        if codings:
            # only chunked is understood: any other coding would reach the client undone, with
            # no header left to say so (Transfer-Encoding is hop-by-hop); a chunked that is not
            # last leaves the length to the close (RFC 9112 6.3), llhttp's reading too
            if codings.strip().lower() != "chunked":
                problem = f"unsupported Transfer-Encoding {codings[:64]!r}"
                raise self._bad_head(f"bad upstream response: {problem}")
            framed = True
        self.status = status
        self.headers_done = True
        self._keep_alive = bool(self._parser.should_keep_alive())  # reset once the message ends
        self._close_delimited = (
            not framed and status not in _NO_BODY_STATUSES and status >= 200 and status != 101
        )
        if self._head_method == "HEAD":
            self.complete = True

    def _bad_head(self, message: str) -> UpstreamProtocolError:
        """The error refusing this response's head, kept for data_received to report once the
        parser stops (a callback's exception reaches it as httptools' own)."""
        self._head_error = UpstreamProtocolError(message)
        return self._head_error

    def _too_long(self) -> str:
        return f"upstream response head longer than {self._head_limit} bytes"

    def on_body(self, body: bytes) -> None:
        stream = self._body()
        if stream is not None:
            stream.feed(body)
        elif self._body_ref is None:
            self._early.append(body)
        else:
            self.abort()  # the consumer dropped the body: stop downloading it

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True


class UpstreamPool:
    """The terminal `Handler`: one keep-alive pool per endpoint (call it with a Request)."""

    def __init__(
        self,
        config: UpstreamConfig | None = None,
        *,
        clock: Clock = monotonic,
        connect: Connector | None = None,
        tls: Callable[[], ssl.SSLContext | None] | None = None,
        outgoing: OutgoingConnections | None = None,
    ) -> None:
        self.config = config or UpstreamConfig()
        self._outgoing = outgoing  # where each new connection is recorded (sidecar/loops.py)
        self._tls = tls  # the current mesh client context (sidecar/tls.py), read per connect
        self._clock = clock
        self._connect_fn = connect
        # keyed by (host, port, expected identity): an mTLS connection is only reused for the
        # identity it was verified against
        self._idle: dict[tuple[str, int, str], deque[_Connection]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self.opened = 0
        self.reused = 0
        self.stale_retries = 0

    async def __call__(self, request: Request) -> Response:
        endpoint = request.context.endpoint
        if endpoint is None:
            raise NoHealthyUpstream("no endpoint was selected for this request")
        conn = self._take_idle(endpoint)
        if conn is not None:
            try:
                return await self._exchange(conn, request, endpoint)
            except _Stale:
                self.stale_retries += 1  # keep-alive race: the app closed it as we sent
        conn = await self._connect(endpoint, request.context.connect_timeout_s)
        try:
            return await self._exchange(conn, request, endpoint)
        except _Stale as exc:
            raise UpstreamReset("upstream closed before responding") from exc

    # -- pool -----------------------------------------------------------------------------

    def _take_idle(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._idle.get((endpoint.host, endpoint.port, endpoint.identity))
        if not idle:
            return None
        oldest_ok = self._clock() - self.config.idle_expiry_s
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > oldest_ok:
                self.reused += 1
                return conn
            conn.close()
        return None

    def release(self, conn: _Connection) -> None:
        if conn.closed or self._closed:
            return
        idle = self._idle.get(conn.key)
        if idle is None:  # (not setdefault: that builds a deque per call)
            idle = self._idle[conn.key] = deque()
        if len(idle) >= self.config.max_idle_per_endpoint:
            conn.close()
            return
        conn.idle_since = self._clock()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close idle connections past their expiry so they do not hold sockets."""
        while True:
            await asyncio.sleep(max(0.5, self.config.idle_expiry_s / 2))
            self.expire_idle()

    def expire_idle(self) -> None:
        oldest_ok = self._clock() - self.config.idle_expiry_s
        for idle in self._idle.values():
            while idle and (idle[0].closed or idle[0].idle_since <= oldest_ok):
                idle.popleft().close()

    async def _connect(self, endpoint: Endpoint, timeout_s: float) -> _Connection:
        key = (endpoint.host, endpoint.port, endpoint.identity)
        conn = await dial(
            lambda: _Connection(self, key),
            endpoint,
            tls=self._mesh_tls(endpoint),
            timeout_s=timeout_s,
            connect=self._connect_fn,
            outgoing=self._outgoing,
        )
        self.opened += 1
        return conn

    def _mesh_tls(self, endpoint: Endpoint) -> ssl.SSLContext | None:
        """The client context for a mesh endpoint (one with an identity), else None (plaintext)."""
        if not endpoint.identity or self._tls is None:
            return None
        context = self._tls()
        if context is None:
            raise UpstreamConnectError(f"no mesh certificate yet to reach {endpoint.identity}")
        return context

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    def stats(self) -> dict[str, object]:
        return {
            "connections_opened": self.opened,
            "connections_reused": self.reused,
            "stale_retries": self.stale_retries,
            "idle": {f"{h}:{p}": len(q) for (h, p, _), q in self._idle.items() if q},
        }

    # -- one exchange ---------------------------------------------------------------------

    async def _exchange(self, conn: _Connection, request: Request, endpoint: Endpoint) -> Response:
        reused = conn.uses > 0
        conn.begin(request.method, request.context)
        body = request.body
        head, upgrade, chunked = _serialise_head(request, endpoint)
        try:
            if conn.closed:
                raise UpstreamReset("connection closed")
            if isinstance(body, bytes):
                conn.transport.write(head + body if body else head)
            else:
                conn.transport.write(head)
                if not upgrade:
                    conn.pump = asyncio.get_running_loop().create_task(
                        _pump(conn, body, chunked), name="upstream-request-body"
                    )
            timeout_s, shared = self._headers_timeout(request)
            await conn.wait_headers(timeout_s, shared)
        except UpstreamReset as exc:
            conn.abort()
            if reused and not conn.received_any and request.replayable:
                raise _Stale from exc
            raise
        except BaseException:
            conn.abort()
            if conn.pump is not None:
                conn.pump.cancel()
            raise
        written = conn.response
        if written is not None:  # (went downstream as it arrived: the same one, for the layers)
            conn.response = None
            conn.take_body(request.context.idle_timeout_s)  # (the connection goes back)
            return written
        headers = _response_headers(conn)
        if conn.status == 101:
            if upgrade and isinstance(body, BodyStream):
                return self._tunnel(conn, headers, body)
            conn.abort()  # (what follows is another protocol: nothing to read or reuse)
            if conn.pump is not None:
                conn.pump.cancel()
            raise UpstreamProtocolError(
                "upstream switched protocols (101) though the request asked for no upgrade"
            )
        response_body = conn.take_body(request.context.idle_timeout_s)
        return new_response(conn.status, headers, response_body)

    def _headers_timeout(self, request: Request) -> tuple[float, DeadlineTimer | None]:
        """How long to wait for the response head, and the request's deadline timer when it is
        due when that wait ends (its own deadline is the request's)."""
        context = request.context
        timeout = self.config.response_timeout_s
        deadline = context.deadline
        if deadline is not None:
            left = max(0.001, deadline - self._clock())
            if left < timeout:
                timer = context.deadline_timer
                if timer is not None and timer.deadline == deadline:
                    return left, timer
                return left, None
        return timeout, None

    def _tunnel(
        self, conn: _Connection, headers: tuple[tuple[str, str], ...], body: BodyStream
    ) -> Response:
        tunnel = _ResponseBody(conn, None, None)
        for chunk in conn._early:
            tunnel.feed(chunk)
        conn._early = []
        conn.tunnel = tunnel
        conn.pump = asyncio.get_running_loop().create_task(
            _pump(conn, body, chunked=False, half_close=True), name="upstream-tunnel"
        )
        return Response(status=101, headers=headers, body=tunnel)


class _Dialed(Protocol):
    """What `dial` needs of a connection protocol to check the peer's identity."""

    transport: Any

    def abort(self) -> None: ...


_P = TypeVar("_P", bound=asyncio.BaseProtocol)


async def dial(
    factory: Callable[[], _P],
    endpoint: Endpoint,
    *,
    tls: ssl.SSLContext | None,
    timeout_s: float,
    connect: Connector | None = None,
    outgoing: OutgoingConnections | None = None,
) -> _P:
    """Connect `factory()` to `endpoint` within `timeout_s`, over mesh mTLS when `tls` is given.

    Socket errors and the deadline become UpstreamConnectError; a TLS peer whose SPIFFE id is
    not `endpoint.identity` is refused. The connection is recorded in `outgoing` (its
    sidecar's own connections: one that comes back in is refused). Shared by the HTTP/1.1 and
    HTTP/2 pools.
    """
    try:
        async with asyncio.timeout(timeout_s):
            if tls is None and connect is not None:
                _, conn = await connect(factory, endpoint.host, endpoint.port)
            else:  # mesh mTLS always dials with the loop (an injected connector is plain)
                conn = await _connect_any(factory, endpoint, tls, timeout_s)
    except TimeoutError as exc:
        raise UpstreamConnectError(
            f"connect to {endpoint.address} timed out after {timeout_s:g}s"
        ) from exc
    except OSError as exc:
        raise UpstreamConnectError(f"connect to {endpoint.address} failed: {_why(exc)}") from exc
    except UnicodeError as exc:  # a host name the resolver cannot encode (IDNA)
        raise UpstreamConnectError(
            f"connect to {endpoint.address} failed: not a valid host name"
        ) from exc
    dialed: _P = conn
    if tls is not None:
        _check_identity(cast(_Dialed, dialed), endpoint)
    if outgoing is not None:
        outgoing.add(getattr(dialed, "transport", None))
    return dialed


async def _connect_any(
    factory: Callable[[], _P], endpoint: Endpoint, tls: ssl.SSLContext | None, timeout_s: float
) -> _P:
    """The loop's connect to `endpoint`, trying each address of its host in turn.

    A host name is resolved here, not inside create_connection: cancelled there while uvloop
    resolves it (the request's deadline, or its caller gone), the resolver's failure is left
    unretrieved and asyncio logs it as an error when it is collected."""
    loop = asyncio.get_running_loop()
    hosts = [endpoint.host]
    if not _is_ip(endpoint.host):
        infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        hosts = list(dict.fromkeys(str(info[4][0]) for info in infos))
    error: OSError | None = None
    for host in hosts:
        try:
            if tls is None:
                _, conn = await loop.create_connection(factory, host, endpoint.port)
            else:
                _, conn = await loop.create_connection(
                    factory,
                    host,
                    endpoint.port,
                    ssl=tls,
                    server_hostname=endpoint.host,
                    ssl_handshake_timeout=timeout_s,
                )
            return conn
        except OSError as exc:  # (the next address; the last failure is the answer)
            error = exc
    raise error if error is not None else OSError(f"no address for {endpoint.host}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _why(exc: OSError) -> str:
    """A connect failure in words: a resolver error's own text (its errno is an EAI_ code,
    which os.strerror does not know: "Unknown error -2"), else the errno's."""
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        return exc.strerror or str(exc)
    return os.strerror(exc.errno)


def _check_identity(conn: _Dialed, endpoint: Endpoint) -> None:
    """Refuse a TLS peer whose verified SPIFFE id is not the endpoint's expected identity."""
    ssl_object = conn.transport.get_extra_info("ssl_object")
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    uris = [v for k, v in (cert or {}).get("subjectAltName", ()) if k == "URI"]
    if uris != [endpoint.identity]:
        conn.abort()
        raise UpstreamConnectError(
            f"{endpoint.address} presented {uris or 'no URI SAN'}, expected {endpoint.identity}"
        )


def _serialise_head(request: Request, endpoint: Endpoint) -> tuple[bytes, bool, bool]:
    """The request head bytes, whether it asks for an upgrade, and whether it is chunked."""
    host = request.authority or endpoint.address
    first = f"{request.method} {request.target} HTTP/1.1\r\nhost: {host}\r\n"
    upgrade = ""
    for name, value in request.headers:
        if name == "upgrade":
            upgrade = value
    body = request.body
    chunked = False
    if upgrade:
        tail = f"connection: upgrade\r\nupgrade: {upgrade}\r\n\r\n"
    elif isinstance(body, bytes):
        if body or request.method in _BODY_METHODS:
            tail = f"content-length: {len(body)}\r\n\r\n"
        else:
            tail = "\r\n"
    elif body.length is not None:
        tail = f"content-length: {body.length}\r\n\r\n"
    else:
        tail = "transfer-encoding: chunked\r\n\r\n"
        chunked = True
    return head_bytes(first, request.headers, _NOT_FORWARDED, tail), bool(upgrade), chunked


def _response_headers(conn: _Connection) -> tuple[tuple[str, str], ...]:
    if conn.status == 101:
        return tuple(conn.headers)
    keep_length = conn.status in _NO_BODY_STATUSES or conn._head_method == "HEAD"
    kept: list[object] = []
    # `item` as an object: compiled, a tuple[str, str] variable is unpacked, and keeping it
    # would build a new tuple for every header
    items = cast("list[object]", conn.headers)
    for item in items:
        name = cast("tuple[str, str]", item)[0]
        if name not in HOP_BY_HOP and (keep_length or name != "content-length"):
            kept.append(item)
    return cast("tuple[tuple[str, str], ...]", tuple(kept))


async def _pump(
    conn: _Connection, body: BodyStream, chunked: bool, half_close: bool = False
) -> None:
    """Copy a streamed request body to the upstream, honouring its write buffer."""
    transport = conn.transport
    try:
        while chunk := await body.read():
            if conn.closed:
                return
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            await conn.drain()
        if conn.closed:
            return
        if chunked:
            transport.write(b"0\r\n\r\n")
        elif half_close and transport.can_write_eof():
            transport.write_eof()
    except ProxyError as exc:
        # The downstream body broke (or timed out): the upstream must not see a truncated
        # request as complete, so the connection is aborted and the exchange fails.
        conn._protocol_error(exc)
