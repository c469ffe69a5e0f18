"""HTTP/1.1 server side of the sidecar: asyncio protocol + httptools (the per-request hot path).

Parses downstream requests (pipelined, keep-alive, sized or chunked bodies streamed with flow
control), refuses malformed or smuggling-prone ones before anything is forwarded, hands each
request in order to the current handler stack and writes the responses back, streaming bodies.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, cast

import httptools

from sidecar._native import mypyc_attr
from sidecar.capture import original_dst
from sidecar.errors import (
    BadRequest,
    DownstreamError,
    HeadersTooLarge,
    NoRoute,
    NotLocal,
    ProxyError,
)
from sidecar.http import (
    FAST_REQUEST,
    FAST_UUID4_TEXT,
    Body,
    BodyStream,
    Request,
    RequestContext,
    Response,
    head_bytes,
    header_name,
    new_context,
    new_request,
)
from sidecar.layers.proxy_errors import error_response
from sidecar.loops import ConnectionKey, OutgoingConnections, connection_key
from sidecar.paths import MODES as PATH_MODES
from sidecar.paths import normalize_target
from sidecar.peers import LocalAddresses
from sidecar.stack import Handler

__all__ = [
    "HOP_BY_HOP",
    "ByteStream",
    "DownstreamClosed",
    "HttpServer",
    "RequestTimeout",
    "ServerConfig",
]

logger = logging.getLogger(__name__)

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_REFUSAL_LOG_S: Final = 30.0  # (HttpServer.count_refusal)
_NO_BODY_STATUSES: Final = frozenset({204, 304})
# the response headers not copied downstream: hop-by-hop, and the length we set ourselves
# (kept when the response stands for another's length: HEAD, 304)
_SKIP: Final = HOP_BY_HOP | {"content-length"}
_SKIP_KEEP_LENGTH: Final = HOP_BY_HOP


class RequestTimeout(DownstreamError):
    status = 408
    reason = "request_timeout"


class DownstreamClosed(DownstreamError):
    """The caller went away mid-request; nothing can be sent back."""

    status = 499
    reason = "downstream_closed"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Limits and behaviour of one listener."""

    direction: str = "outbound"
    max_header_bytes: int = 64 * 1024
    buffer_body_bytes: int = 64 * 1024  # sized bodies up to this are buffered (so replayable)
    idle_timeout_s: float = 60.0  # keep-alive connection with no request in flight
    body_timeout_s: float = 60.0  # max gap between request body chunks / write stalls
    forwarded_for: bool = True
    high_water_bytes: int = 256 * 1024
    original_dst: bool = False  # read SO_ORIGINAL_DST per connection (transparent capture)
    path_normalization: str = "merge_slashes"  # sidecar/paths.py: none | base | merge_slashes
    # the connections this sidecar's pools dialed: a request arriving on one is refused (a
    # loop: sidecar/loops.py); None (inbound) checks nothing
    own_connections: OutgoingConnections | None = None
    # serve only peers of this host (the outbound listener: sidecar/peers.py); None: anyone
    local_peers: LocalAddresses | None = None

    def __post_init__(self) -> None:
        if self.direction not in ("outbound", "inbound"):
            raise ValueError(f"direction must be outbound or inbound, got {self.direction!r}")
        if self.path_normalization not in PATH_MODES:
            raise ValueError(f"path_normalization must be one of {', '.join(PATH_MODES)}")
        for name in ("max_header_bytes", "high_water_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.idle_timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")


class _Pending:
    """One parsed request waiting for (or in) its turn on the connection."""

    __slots__ = (
        "authority",
        "body",
        "complete",
        "error",
        "expect_continue",
        "h2_settings",
        "headers",
        "keep_alive",
        "method",
        "request_id",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self) -> None:
        self.method = "GET"
        self.target = ""
        self.authority = ""
        self.version = "1.1"
        self.headers: list[tuple[str, str]] = []
        self.keep_alive = True
        self.upgrade = False
        self.expect_continue = False
        self.body: ByteStream | None = None
        self.complete = False
        self.error: ProxyError | None = None
        self.request_id = ""
        self.h2_settings = ""  # HTTP2-Settings of an `Upgrade: h2c` request


# (protocol factory, host, port) -> a started server with `sockets` (see HttpServer.start)
Listen = Callable[[Callable[[], asyncio.BaseProtocol], str, int], Awaitable[Any]]


class HttpServer:
    """A listener: accepts connections, tracks them, and drains them on shutdown."""

    def __init__(self, config: ServerConfig, handler: Callable[[], Handler]) -> None:
        self.config = config
        self.current_handler = handler
        self.connections: set[Any] = set()  # _ServerProtocol | h2server.H2ServerConnection
        self.draining = False
        self.requests_total = 0
        # connections refused before any request: "loop" (sidecar/loops.py), "not_local"
        # (sidecar/peers.py); on /stats, and logged at most every _REFUSAL_LOG_S per kind
        self.refused: dict[str, int] = {}
        self._refusal_logged: dict[str, float] = {}
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._all_closed = asyncio.Event()

    def count_refusal(self, kind: str, peer: str, now: float) -> None:
        """Count a refused connection; log it unless one of its kind was logged recently (a
        peer opening connections in a loop must not flood the log)."""
        self.refused[kind] = self.refused.get(kind, 0) + 1
        if now - self._refusal_logged.get(kind, -_REFUSAL_LOG_S) >= _REFUSAL_LOG_S:
            self._refusal_logged[kind] = now
            logger.warning(
                "connection refused",
                extra={"reason": kind, "peer": peer, "refused_so_far": self.refused[kind]},
            )

    def connection_closed(self, conn: Any) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._all_closed.set()

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, listen: Listen | None = None
    ) -> tuple[str, int]:
        """Listen on host:port (0 picks a free port); return the bound address.

        `listen` replaces the plain listener (sidecar/tls.py's mTLS listener); it calls the
        factory per accepted connection and sets the protocol's `peer_identity` when verified.
        """
        loop = asyncio.get_running_loop()
        if listen is not None:
            server = await listen(lambda: _ServerProtocol(self), host, port)
            self._server = server
        else:
            server = await loop.create_server(
                lambda: _ServerProtocol(self), host, port, reuse_address=True, backlog=1024
            )
            self._server = server
        self._sweeper = asyncio.create_task(self._sweep_idle(), name="codec-idle-sweeper")
        sock = server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    @property
    def in_flight(self) -> int:
        return sum(1 for c in self.connections if c.busy)

    async def drain(self, timeout_s: float) -> bool:
        """Stop accepting, finish in-flight requests, close idle keep-alive connections.

        Returns True when every connection closed within `timeout_s`; stragglers are aborted.
        """
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.start_drain()
        if self.connections:
            self._all_closed.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._all_closed.wait()
            except TimeoutError:
                logger.warning("drain timed out", extra={"open": len(self.connections)})
        clean = not self.connections
        for conn in list(self.connections):
            conn.abort()
        return clean

    async def close(self) -> None:
        """Close the listener and every connection at once."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _sweep_idle(self) -> None:
        loop = asyncio.get_running_loop()
        period = min(1.0, self.config.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self.connections):
                if not conn.busy and now - conn.last_active > self.config.idle_timeout_s:
                    conn.abort()


@mypyc_attr(native_class=False)  # upstream.py subclasses it with a weakref slot
class ByteStream:
    """A one-shot `BodyStream` fed by a protocol, with flow control and an idle deadline.

    The producer calls `feed`/`feed_eof`/`fail`; above `high_water` buffered bytes it calls
    `pause()` (stop reading the socket) and once the consumer has drained a quarter, `resume()`.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_discarding",
        "_error",
        "_finished",
        "_high",
        "_length",
        "_on_pause",
        "_on_resume",
        "_paused",
        "_timeout_error",
        "_waiter",
        "eof_received",
        "idle_timeout_s",
        "received_bytes",
    )

    def __init__(
        self,
        length: int | None,
        *,
        pause: Callable[[], None],
        resume: Callable[[], None],
        high_water: int = 256 * 1024,
        idle_timeout_s: float | None = None,
        timeout_error: Callable[[], BaseException] = lambda: RequestTimeout(),
    ) -> None:
        self._length = length
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._high = high_water
        self._on_pause = pause
        self._on_resume = resume
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._discarding = False
        self._timeout_error = timeout_error
        self.eof_received = False
        self.idle_timeout_s = idle_timeout_s
        self.received_bytes = 0

    @property
    def length(self) -> int | None:
        return self._length

    @property
    def finished(self) -> bool:
        """True once `read()` has returned the final b""."""
        return self._finished

    @property
    def has_data(self) -> bool:
        return bool(self._chunks) or self.eof_received

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._discarding:
            self.received_bytes += len(data)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        self.received_bytes += len(data)
        if self._buffered > self._high and not self._paused:
            self._paused = True
            self._on_pause()
        self._wake()

    def feed_eof(self) -> None:
        self.eof_received = True
        self._wake()

    def discard(self) -> None:
        """Nobody will read the rest (its response is out): drop what is buffered and what
        comes, never pausing the producer for it; a reader still waiting gets an error."""
        self._discarding = True
        self._chunks.clear()
        self._buffered = 0
        if not self.eof_received and self._error is None:
            self._error = DownstreamClosed("the request body was abandoned after the response")
            self._wake()
        if self._paused:
            self._paused = False
            self._on_resume()

    def fail(self, exc: BaseException) -> None:
        """Make the next read (after buffered data) raise `exc`; no-op once at EOF."""
        if not self.eof_received and self._error is None:
            self._error = exc
            self._wake()

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
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= self._high // 4:
                    self._paused = False
                    self._on_resume()
                return chunk
            if self._error is not None:
                raise self._error
            if self.eof_received:
                self._finished = True
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

    async def read_all(self) -> bytes:
        """The whole remaining body (callers bound its size by `length` first)."""
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)


# a request body abandoned after its response: drained to keep the connection when at most this
# much is still due, else the connection closes, lingering this long for the client to stop
_DISCARD_BYTES: Final = 1 << 20
_LINGER_S: Final = 5.0

_SPECIAL: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "host", "expect", "x-forwarded-for"}
)


class _ServerProtocol(asyncio.Protocol):
    """One downstream connection: parse, queue in order, dispatch, write back."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._config = server.config
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[_Pending] = deque()
        self._current: _Pending | None = None
        self._current_queued = False
        self._url_parts: list[bytes] = []
        self._head_bytes = 0
        self._head_raw = 0
        self._in_head = False
        self._reject_error: ProxyError | None = None
        # A request asking an Upgrade with a Content-Length body is served as HTTP/1.1
        # (_finish_head). llhttp takes an upgrade request as bodiless: it ends the message at
        # its head and stops there, so the body is read here (_feed_raw_body), then parsing
        # goes on with a new parser.
        self._unupgraded: _Pending | None = None  # such a request, its head just ended
        self._raw_body: ByteStream | None = None  # its body, while bytes of it are due
        self._raw_left = 0
        self._lingering = False  # closing after a response while the client may still send
        self._task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._tunnel: ByteStream | None = None
        self._closing = False
        self._draining = False
        self._body_paused = False
        self._queue_paused = False
        self._reading_paused = False
        self._peer = ""
        self._peer_key: ConnectionKey | None = None
        self._original_dst = ""
        self.peer_identity = ""  # verified SPIFFE id of the caller, set by the mTLS listener
        self._seen_data = False
        # the read being parsed; whether it starts a request (the parser between requests)
        self._chunk = b""
        self._fresh = False
        self.busy = False
        self.last_active = self._loop.time()
        # the request whose final response may be written the moment it arrives (_handle,
        # _write_final), and how that went: -1 not written, else keep-alive (1) or not (0)
        self._through: RequestContext | None = None
        self._through_keep = -1
        self._write_final_cb = self._write_final  # (bound once, set on such contexts)

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport  # uvloop's transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) else ""
        if self._config.own_connections is not None:
            # (peer, our end), checked at the first read (sidecar/loops.py)
            self._peer_key = connection_key(peer, transport.get_extra_info("sockname"))
        if self._config.original_dst:
            self._original_dst = original_dst(transport.get_extra_info("socket"))
        transport.set_write_buffer_limits(high=self._config.high_water_bytes)
        self._server.connections.add(self)
        if self._server.draining:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connection_closed(self)
        self._closing = True
        gone = DownstreamClosed("downstream closed the connection")
        if self._current is not None and self._current.body is not None:
            self._current.body.fail(gone)
        for pending in self._queue:
            if pending.body is not None:
                pending.body.fail(gone)
        if self._tunnel is not None:
            self._tunnel.feed_eof()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(gone)
        if self._task is not None:
            self._task.cancel()
        self._wake()

    def eof_received(self) -> bool | None:
        if self._tunnel is not None:
            self._tunnel.feed_eof()  # half-close: keep sending the upstream's side
            return True
        if self._lingering:
            self.close()  # (the client has stopped sending: nothing left to drain)
        return None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_active = self._loop.time()
        if self._tunnel is not None:
            self._tunnel.feed(data)
            return
        if self._closing or self._lingering:
            return
        if not self._seen_data:
            self._seen_data = True
            own = self._config.own_connections
            if own is not None and own.includes(self._peer_key):
                # (404 no_route, as the pool's own-listener check answers for the names it knows)
                looped = NoRoute(
                    "this request came back into the sidecar that sent it (a request loop): "
                    "name a service, or a host:port that is not this sidecar"
                )
                self._refuse("loop", looped, data)
                return
            local = self._config.local_peers
            if local is not None and not local.includes(self._peer):
                foreign = NotLocal("this listener serves processes of its own host only")
                self._refuse("not_local", foreign, data)
                return
            if data.startswith(b"PRI * HTTP/2"):  # HTTP/2 client preface: h2c or TLS with ALPN h2
                self._hand_over_h2(data)
                return
        if self._raw_left:
            data = self._feed_raw_body(data)
            if not data:
                return
        while True:
            if self._current is None and FAST_REQUEST is not None:
                data = self._fast_requests(data)
                if not data:
                    break
            self._chunk, self._fresh = data, self._current is None
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                rest = data[int(upgrade.args[0]) :]
                unupgraded = self._unupgraded
                if unupgraded is not None and unupgraded.body is not None:
                    self._unupgraded = None
                    self._parser = httptools.HttpRequestParser(self)
                    self._raw_body = unupgraded.body
                    self._raw_left = unupgraded.body.length or 0
                    data = self._feed_raw_body(rest)
                    if data:
                        continue  # (a loop, not recursion: a read may hold many such requests)
                    break
                if not self._upgrade_h2c(rest):
                    self._start_tunnel(rest)
                return
            except httptools.HttpParserError as exc:
                self._reject(self._reject_error or BadRequest(f"malformed request: {exc}"))
                return
            break
        self._chunk = b""  # (not kept alive past its parse)
        if self._in_head:  # a header line still incomplete after this read: bound it too
            self._head_raw += len(data)
            if self._head_raw > self._config.max_header_bytes:
                self._reject(HeadersTooLarge("request headers too large"))

    def _refuse(self, kind: str, error: ProxyError, data: bytes) -> None:
        """Refuse the connection at its first read, counted as `kind`: answer `error` and
        close; an HTTP/2 one (its first bytes the preface) is closed, its client sees a reset.
        Kinds: "loop", a connection this sidecar dialed itself (passed through to its own
        outbound listener, sidecar/loops.py); "not_local", a peer of another host on the
        outbound listener, a proxy with this pod's identity (sidecar/peers.py)."""
        self._server.count_refusal(kind, self._peer, self._loop.time())
        if data.startswith(b"PRI * HTTP/2"):
            self.abort()
            return
        self._reject(error)

    def _fast_requests(self, data: bytes) -> bytes:
        """Take the requests at the start of `data` that sidecar/_h1fast.c reads whole in one
        call (a common head; no body or a Content-Length one all in `data`), as httptools'
        callbacks would take them: the same state, _finish_head, queueing, body and end.
        Returns the bytes from the first one it declines, for httptools, whose parser is at a
        message start (b"" when none are left)."""
        parse = FAST_REQUEST
        if parse is None:
            return data
        limit = self._config.max_header_bytes
        at = 0
        size = len(data)
        while at < size and not self._closing:
            parsed = parse(data, at, limit)
            if parsed is None:
                return data[at:] if at else data
            end, method, url, version, headers, keep_alive, body = parsed
            self.on_message_begin()
            p = self._current
            assert p is not None
            self._url_parts.append(url)
            p.headers = headers
            self._in_head = False
            p.method = method
            p.version = version
            p.keep_alive = keep_alive
            p.upgrade = False
            try:
                self._finish_head(p)
            except ProxyError as exc:
                self._reject(exc)
                return b""
            self._head_taken(p)
            if body:
                self.on_body(body)
            self.on_message_complete()
            at = end
        return b""

    def _feed_raw_body(self, data: bytes) -> bytes:
        """Feed the due bytes of an un-upgraded request's body; return what follows them."""
        body = self._raw_body
        assert body is not None
        n = min(len(data), self._raw_left)
        body.feed(data[:n])
        self._raw_left -= n
        if not self._raw_left:
            body.feed_eof()
            self._raw_body = None
        return data[n:]

    # -- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = _Pending()
        self._unupgraded = None  # (set again by this message's head if it is one)
        self._current_queued = False
        self._url_parts = []
        self._in_head = True
        self._head_bytes = 0
        self._head_raw = 0

    def on_url(self, url: bytes) -> None:
        self._url_parts.append(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            # a trailer field, after a chunked body: merged into the head it would skip every
            # check of it (an x-forwarded-for after ours, an authorization); not merged (RFC
            # 9110 6.5.1), and dropped, as Envoy does with HTTP/1 trailers by default
            return
        self._count_head(len(name) + len(value) + 4)
        assert self._current is not None
        self._current.headers.append((header_name(name), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self._current
        assert p is not None
        parser = self._parser
        p.method = parser.get_method().decode("ascii")
        p.version = self._version_11() or parser.get_http_version()
        p.keep_alive = parser.should_keep_alive()
        p.upgrade = parser.should_upgrade()
        try:
            self._finish_head(p)
        except ProxyError as exc:
            self._reject_error = exc
            raise
        self._head_taken(p)

    def _head_taken(self, p: _Pending) -> None:
        """Queue the request whose head `p` passed _finish_head; start or wake the task."""
        self._queue.append(p)
        self._current_queued = True
        if len(self._queue) >= 32:
            self._queue_paused = True
            self._update_reading()
        if self._task is None:
            self._task = self._loop.create_task(self._serve())
        else:
            self._wake()

    def _version_11(self) -> str:
        """ "1.1" when the request whose head just ended is the first of this read and the read
        starts with it (its request line here) and its line ends in `HTTP/1.1\\r\\n` right after
        method SP url SP; else "" (the caller asks httptools: get_http_version formats a str per
        request). A request line with leading CRLFs or extra spaces does not match there (no
        CRLF comes before its end), so it is asked too."""
        if not self._fresh:
            return ""
        self._fresh = False
        parts = self._url_parts
        p = self._current
        if len(parts) != 1 or p is None:
            return ""
        at = len(p.method) + len(parts[0]) + 2
        return "1.1" if self._chunk[at : at + 10] == b"HTTP/1.1\r\n" else ""

    def on_body(self, body: bytes) -> None:
        p = self._current
        if p is not None and p.body is not None:
            p.body.feed(body)

    def on_message_complete(self) -> None:
        p = self._current
        if p is None:
            return
        p.complete = True
        if p.body is not None and not p.upgrade and p is not self._unupgraded:
            p.body.feed_eof()
        self._current = None

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self._config.max_header_bytes:
            self._reject_error = HeadersTooLarge("request headers too large")
            raise self._reject_error

    # -- request head ----------------------------------------------------------------------

    def _finish_head(self, p: _Pending) -> None:
        """Validate framing, strip hop-by-hop headers, resolve authority and target."""
        if p.version != "1.1" and p.version != "1.0":
            # llhttp also takes HTTP/0.9 ("GET /x" with no version) and HTTP/2.0 (for the h2
            # preface): forwarded as HTTP/1.1, "PRI /x" became a request line the app could
            # not parse, and a 0.9 client cannot read the head of our answer anyway
            raise BadRequest(f"HTTP/{p.version} is not supported", status=505)
        if p.method == "CONNECT":
            raise BadRequest("CONNECT tunnels are not supported", status=405)
        content_length: str | None = None
        transfer_encoding = ""
        connection = ""
        host = ""
        seen_host = False
        forwarded = ""
        upgrade = ""
        # the received (name, value) tuples are kept as objects: compiled, a tuple[str, str]
        # is unpacked, and appending it would build a new tuple for every header
        out: list[object] = []
        items = cast("list[object]", p.headers)
        for item in items:
            name, value = cast("tuple[str, str]", item)
            if name not in _SPECIAL and name not in HOP_BY_HOP:
                if name == "x-request-id":
                    p.request_id = value
                out.append(item)
                continue
            if name == "content-length":
                value = value.strip()
                if not value.isdigit() or (content_length is not None and value != content_length):
                    raise BadRequest("invalid or conflicting Content-Length")
                content_length = value
            elif name == "transfer-encoding":
                transfer_encoding = f"{transfer_encoding},{value}" if transfer_encoding else value
            elif name == "connection":
                connection = f"{connection},{value}" if connection else value
            elif name == "host":
                if seen_host:  # (RFC 9112 3.2: a request with two is answered 400)
                    raise BadRequest("more than one Host header")
                seen_host = True
                host = value.strip()
                if not (host.isascii() and host.isprintable()) or " " in host:
                    raise BadRequest("invalid Host header")
                out.append(item)
            elif name == "expect":
                if value.strip().lower() == "100-continue":
                    p.expect_continue = p.version == "1.1"
            elif name == "x-forwarded-for":
                forwarded = f"{forwarded}, {value}" if forwarded else value
            elif name == "upgrade":
                upgrade = value
        if transfer_encoding:
            if content_length is not None:
                raise BadRequest("both Content-Length and Transfer-Encoding")
            codings = [c.strip().lower() for c in transfer_encoding.split(",")]
            if codings[-1] != "chunked" or codings.count("chunked") != 1:
                raise BadRequest("unsupported Transfer-Encoding")  # (RFC 9112 6.3: 400)
            if len(codings) > 1:
                # gzip, chunked: the app would get gzip bytes as the body, nothing saying so
                # (Transfer-Encoding is hop-by-hop); RFC 9112 6.1: 501 for a coding not known
                raise BadRequest(f"transfer coding {codings[0]!r} is not supported", status=501)
        if p.upgrade and (transfer_encoding or (content_length and int(content_length))):
            # llhttp takes an upgrade request as bodiless: its body waited as tunnel bytes, sent
            # only after a 101, so an app declining the upgrade got the request without it (and
            # a request pipelined after it never came). RFC 9110 7.8 lets a server ignore
            # Upgrade: such a request is served as HTTP/1.1 with its body (curl --http2 -d asks
            # h2c with one; mod_h2 serves it so too). A chunked one is refused: llhttp would
            # not read it.
            if transfer_encoding:
                raise BadRequest("an Upgrade request with a chunked body is not supported")
            p.upgrade = False
            self._unupgraded = p
        if p.upgrade and upgrade.strip().lower() == "h2c" and not transfer_encoding:
            pairs = cast("list[tuple[str, str]]", out)
            settings = [v for k, v in pairs if k == "http2-settings"]
            if len(settings) == 1 and content_length in (None, "0"):
                p.h2_settings = settings[0]  # the codec switches to HTTP/2 (sidecar/h2server.py)
        if connection:
            named = {t.strip().lower() for t in connection.split(",")} - {"close", "keep-alive"}
            named.discard("upgrade")
            if named:
                out = [h for h in out if cast("tuple[str, str]", h)[0] not in named]
        self._resolve_target(p, host)
        if not p.request_id:
            p.request_id = _request_uuid()
            out.append(("x-request-id", p.request_id))
        if self._config.forwarded_for and self._peer:
            forwarded = f"{forwarded}, {self._peer}" if forwarded else self._peer
        if forwarded:
            out.append(("x-forwarded-for", forwarded))
        if p.upgrade:
            out.append(("connection", "upgrade"))
            out.append(("upgrade", upgrade))
            p.keep_alive = False
            p.body = self._new_body(None)
        elif transfer_encoding:
            p.body = self._new_body(None)
        elif content_length is not None and int(content_length) > 0:
            p.body = self._new_body(int(content_length))
        p.headers = cast("list[tuple[str, str]]", out)

    def _resolve_target(self, p: _Pending, host: str) -> None:
        url = b"".join(self._url_parts)
        if url.startswith(b"/") or url == b"*":
            if url == b"*" and p.method != "OPTIONS":  # (RFC 9112 3.2.4; llhttp takes any)
                raise BadRequest("the asterisk-form target is for OPTIONS only")
            p.target = self._normalized(url.decode("latin-1"))
            p.authority = host
        else:
            try:
                # Any: httptools' stubs say `port: int`, but it is None when absent (and
                # mypyc would check the stub's type)
                parsed: Any = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError as exc:
                raise BadRequest("invalid request target") from exc
            if parsed.schema not in (b"http", b"HTTP") or not parsed.host:
                raise BadRequest("only http:// absolute-form targets are proxied")
            authority = parsed.host.decode("idna")
            if parsed.port:
                authority = f"{authority}:{parsed.port}"
            p.authority = authority
            target = (parsed.path or b"/").decode("latin-1")
            if parsed.query:
                target = f"{target}?{parsed.query.decode('latin-1')}"
            p.target = self._normalized(target)
        if not p.authority and p.version == "1.1":
            raise BadRequest("missing Host header")

    def _normalized(self, target: str) -> str:
        # (the scans first: nearly every target has nothing to normalize)
        if ("%" in target or "/." in target or "//" in target or "#" in target) and target != "*":
            if "#" in target:
                # RFC 9112 3.2: no fragment in a request target. The app reads "/admin#x" as
                # /admin, which a rule on exactly /admin did not match (Envoy refuses it too)
                raise BadRequest("a request target cannot hold a fragment ('#')")
            return normalize_target(target, self._config.path_normalization)
        return target

    def _new_body(self, length: int | None) -> ByteStream:
        return ByteStream(
            length,
            pause=self._pause_for_body,
            resume=self._resume_for_body,
            high_water=self._config.high_water_bytes,
            idle_timeout_s=self._config.body_timeout_s,
        )

    # -- flow control and state ------------------------------------------------------------

    def _pause_for_body(self) -> None:
        self._body_paused = True
        self._update_reading()

    def _resume_for_body(self) -> None:
        self._body_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        want_pause = self._body_paused or self._queue_paused or self._closing
        if want_pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not want_pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _hand_over_h2(self, data: bytes) -> None:
        from sidecar.h2server import H2ServerConnection  # codec is imported by h2server

        self._server.connections.discard(self)
        conn = H2ServerConnection(
            self._server,
            self._transport,
            peer=self._peer,
            peer_identity=self.peer_identity,
            original_dst=self._original_dst,
        )
        self._server.connections.add(conn)
        conn.start(data)

    def _upgrade_h2c(self, rest: bytes) -> bool:
        """Switch to HTTP/2 for a lone bodiless `Upgrade: h2c` request (RFC 7540 3.2)."""
        p = self._queue[-1] if self._queue else None
        if p is None or not p.h2_settings or len(self._queue) != 1:
            return False
        if self.busy:
            return False
        from sidecar.h2server import H2ServerConnection

        if self._task is not None:  # it has not taken `p` yet (not busy): it is ours to stop
            self._task.cancel()
            self._task = None
        self._queue.clear()
        self._current = None
        drop = {"connection", "upgrade", "http2-settings"}
        request = Request(
            method=p.method,
            target=p.target,
            headers=tuple((k, v) for k, v in p.headers if k not in drop),
            body=b"",
            authority=p.authority,
            version="2",
            context=RequestContext(
                direction=self._config.direction,
                request_id=p.request_id,
                downstream_addr=self._peer,
                peer_identity=self.peer_identity,
                original_dst=self._original_dst,
            ),
        )
        self._server.connections.discard(self)
        conn = H2ServerConnection(
            self._server,
            self._transport,
            peer=self._peer,
            peer_identity=self.peer_identity,
            original_dst=self._original_dst,
        )
        self._server.connections.add(conn)
        conn.start_upgrade(p.h2_settings, request, rest)
        return True

    def _start_tunnel(self, rest: bytes) -> None:
        p = self._current
        if p is None and self._queue:
            p = self._queue[-1]
        if p is None or p.body is None:
            self._reject(BadRequest("unexpected upgrade"))
            return
        self._tunnel = p.body
        self._current = None
        if rest:
            self._tunnel.feed(rest)

    def _reject(self, error: ProxyError) -> None:
        """Stop reading; answer `error` in order after any earlier responses, then close."""
        self._closing = True
        current = self._current
        if current is not None and self._current_queued:
            current.error = error
            if current.body is not None:
                current.body.fail(error)
        else:
            pending = _Pending()
            pending.error = error
            self._queue.append(pending)
        self._current = None
        self._update_reading()
        if self._task is None:
            self._task = self._loop.create_task(self._serve())
        else:
            self._wake()

    def start_drain(self) -> None:
        self._draining = True
        if not self.busy and not self._queue:
            self.close()

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _linger_close(self) -> None:
        """Close once the client stops sending, or after _LINGER_S. Closed at once with a
        request body still coming, the kernel answers its bytes with a reset, which can cost
        the client the response it has not read yet (as nginx's lingering_close): here our
        side is shut (FIN) and what arrives is read and dropped meanwhile."""
        transport = self._transport
        if transport is None or transport.is_closing() or not transport.can_write_eof():
            self.close()  # (TLS: no half-close)
            return
        self._lingering = True
        self._body_paused = self._queue_paused = False
        self._update_reading()
        transport.write_eof()
        self._loop.call_later(_LINGER_S, self.close)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- dispatch and response writing -----------------------------------------------------

    async def _serve(self) -> None:
        queue = self._queue
        while True:
            while not queue:
                if self._closing or self._draining:
                    self.close()
                    return
                self._waiter = self._loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            pending = queue[0]
            self.busy = True
            try:
                keep = await self._handle(pending)
                linger = self._abandon_body(pending)
            except Exception:
                # Connection task boundary: a bug while writing one response must not leave the
                # connection hanging half-written; drop it and keep the listener serving.
                logger.exception("response failed", extra={"target": pending.target[:200]})
                self.abort()
                return
            queue.popleft()
            self.busy = False
            self.last_active = self._loop.time()
            self._server.requests_total += 1
            if self._queue_paused and len(queue) < 8:
                self._queue_paused = False
                self._update_reading()
            if linger:
                self._linger_close()
                return
            if not keep or self._draining:
                self.close()
                return

    def _abandon_body(self, p: _Pending) -> bool:
        """After its response: a request body not read to its end is dropped as it arrives (an
        app that answered early, e.g. 401 to an upload, left it unread: buffered to the high
        water mark, it paused reading, and the client, still sending, waited for nothing until
        the idle timeout). True when the connection must then close: more than
        _DISCARD_BYTES still due, or a length unknown (chunked)."""
        body = p.body
        if body is None or p.upgrade or body.eof_received or p.error is not None:
            return False  # (a refused request's connection closes at once, as before)
        length = body.length
        body.discard()
        return length is None or length - body.received_bytes > _DISCARD_BYTES

    async def _handle(self, p: _Pending) -> bool:
        if p.error is not None:
            await self._write_response(p, error_response(p.error), force_close=True)
            return False
        body: Body = b""
        stream = p.body
        if stream is not None:
            if p.expect_continue and not stream.has_data and self._transport is not None:
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if stream.length is not None and stream.length <= self._config.buffer_body_bytes:
                try:
                    body = await stream.read_all()
                except DownstreamError as exc:
                    await self._write_response(p, error_response(exc), force_close=True)
                    return False
            else:
                body = stream
        context = new_context(
            self._config.direction, p.request_id, self._peer, self.peer_identity, self._original_dst
        )
        self._through_keep = -1  # (nothing written yet for this one, whatever ended the last)
        if p.complete and isinstance(body, bytes) and p.method != "HEAD" and not p.upgrade:
            # the whole request is in: its final response may go out as it arrives
            context.write_final = self._write_final_cb
            self._through = context
        request = new_request(
            p.method, p.target, tuple(p.headers), body, p.authority, "http", p.version, context
        )
        try:
            response = await self._server.current_handler()(request)
        except ProxyError as exc:  # normally mapped by the stack's proxy_errors layer
            response = error_response(exc)
        except Exception:
            # Connection task boundary: one failing handler must not kill the listener.
            logger.exception("handler raised", extra={"target": p.target[:200]})
            response = error_response(ProxyError("internal proxy error"))
        finally:
            self._through = None
        keep = self._through_keep
        if keep >= 0:  # written as it arrived: what the layers returned since is that one
            self._through_keep = -1
            return keep == 1
        if isinstance(response.body, bytes) and response.status != 101:
            written = self._write_head(p, response, p.error is not None)  # no await: fast path
            return written is not None and written[0]
        return await self._write_response(p, response, force_close=p.error is not None)

    def _write_final(self, context: RequestContext, response: Response) -> None:
        """Write the final whole `response` of the request now being handled as it arrives
        (RequestContext.write_final): the layers' work on it runs after, in that request's
        task, and what they return is not written again (_handle). Any other context: nothing
        (a request of this connection that is over, or never one to answer so)."""
        if context is not self._through or not isinstance(response.body, bytes):
            return
        self._through = None
        p = self._queue[0] if self._queue else None
        if p is None:
            return
        written = self._write_head(p, response, p.error is not None)
        self._through_keep = 1 if written is not None and written[0] else 0

    async def _write_response(self, p: _Pending, response: Response, *, force_close: bool) -> bool:
        """Write `response`; True if the connection stays open for the next request."""
        if response.status == 101 and p.upgrade:
            return await self._write_tunnel(response)
        written = self._write_head(p, response, force_close)
        if written is None:
            return False
        keep, chunked = written
        body = response.body
        if isinstance(body, bytes):
            return keep
        return await self._stream_body(body, chunked) and keep

    def _write_head(
        self, p: _Pending, response: Response, force_close: bool
    ) -> tuple[bool, bool] | None:
        """Write the head (and a buffered body); (keep-alive, chunked), None if disconnected."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return None
        status = response.status
        keep = p.keep_alive and not force_close and not self._draining and not self._closing
        no_body = p.method == "HEAD" or status in _NO_BODY_STATUSES or status < 200
        # a HEAD or 304 answer keeps the length of what it stands for; 204 and 1xx carry none
        # (RFC 9110 8.6: a server MUST NOT send one; an upstream's went on as it was)
        keep_length = no_body and status != 204 and status >= 200
        reason = response.reason
        line = _STATUS_LINES.get(status)  # (an upstream's usual reason phrase: the same line)
        if reason and (line is None or reason != _PHRASE_STR[status]):
            line = f"HTTP/1.1 {status} {reason}\r\n"
        elif line is None:
            line = f"HTTP/1.1 {status} Unknown\r\n"
        skip = _SKIP_KEEP_LENGTH if keep_length else _SKIP
        body = response.body
        chunked = False
        if no_body:
            body = b""
            tail = ""
        elif isinstance(body, bytes):
            if keep and p.version == "1.1":  # the usual answer: its head's end, cached
                transport.write(
                    head_bytes(line, response.headers, skip, _length_end(len(body))) + body
                )
                return keep, False
            tail = f"content-length: {len(body)}\r\n"
        elif body.length is not None:
            tail = f"content-length: {body.length}\r\n"
        elif p.version == "1.1":
            tail = "transfer-encoding: chunked\r\n"
            chunked = True
        else:
            tail = ""
            keep = False
        if not keep:
            tail += "connection: close\r\n\r\n"
        elif p.version == "1.0":
            tail += "connection: keep-alive\r\n\r\n"
        else:
            tail += "\r\n"
        head = head_bytes(line, response.headers, skip, tail)
        transport.write(head + body if isinstance(body, bytes) else head)
        return keep, chunked

    async def _stream_body(self, body: BodyStream, chunked: bool) -> bool:
        """Copy `body` to the downstream honouring its write buffer; False if cut short."""
        transport = self._transport
        sent = 0
        try:
            while True:
                chunk = await body.read()
                if transport is None or transport.is_closing():
                    return False
                if not chunk:
                    break
                sent += len(chunk)
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                if self._write_paused:
                    await self._drain()
        except ProxyError as exc:
            # Headers are gone already: the only honest signal left is an aborted connection.
            logger.info("response body cut short", extra={"reason": exc.reason})
            self.abort()
            return False
        if chunked:
            transport.write(b"0\r\n\r\n")
        elif body.length is not None and sent != body.length:
            self.abort()
            return False
        return True

    async def _write_tunnel(self, response: Response) -> bool:
        transport = self._transport
        assert transport is not None
        lines = [f"HTTP/1.1 101 {response.reason or 'Switching Protocols'}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in response.headers)
        lines.append("\r\n")
        transport.write("".join(lines).encode("latin-1", "replace"))
        body = response.body
        if isinstance(body, bytes):
            transport.write(body)
        else:
            await self._stream_body(body, chunked=False)
        if transport.can_write_eof() and not transport.is_closing():
            transport.write_eof()
        return False

    async def _drain(self) -> None:
        waiter = self._loop.create_future()
        self._drain_waiter = waiter
        try:
            async with asyncio.timeout(self._config.body_timeout_s):
                await waiter
        except TimeoutError as exc:
            self.abort()
            raise DownstreamClosed("downstream stopped reading") from exc
        finally:
            self._drain_waiter = None


_PHRASE_STR: Final = {int(s): s.phrase for s in HTTPStatus}
_STATUS_LINES: Final = {
    code: f"HTTP/1.1 {code} {phrase}\r\n" for code, phrase in _PHRASE_STR.items()
}


def _length_end(length: int) -> str:
    """The end of a keep-alive HTTP/1.1 head with a Content-Length, cached by length (a
    service's answers come in few lengths; a flood of others only costs a cleared table)."""
    end = _LENGTH_ENDS.get(length)
    if end is None:
        end = f"content-length: {length}\r\n\r\n"
        if len(_LENGTH_ENDS) >= _LENGTH_ENDS_MAX:
            _LENGTH_ENDS.clear()
        _LENGTH_ENDS[length] = end
    return end


_LENGTH_ENDS: Final[dict[int, str]] = {}
_LENGTH_ENDS_MAX: Final = 1024


def _request_uuid() -> str:
    """A random (version 4) UUID; ids need uniqueness, not secrecy, so no syscall per request."""
    return _UUIDS.next()


class _UuidSource:
    """Random version-4 UUID strings, formatted a batch at a time.

    One os.urandom read of 256 x 16 bytes is laid out as 256 UUID strings (sidecar/_h1fast.c
    when compiled, else strided byte copies: the work per id is one slice); every id takes 128
    fresh random bits, as uuid.uuid4() does, of which the version nibble becomes 4 and the
    variant nibble keeps its two low bits under the 0b10 variant (122 random bits, as UUID4).
    """

    __slots__ = ("_pos", "_text")

    def __init__(self) -> None:
        self._text = ""
        self._pos = 0

    def next(self) -> str:
        text, pos = self._text, self._pos
        if pos >= len(text):
            text = self._text = _uuid_batch(_UUID_BATCH)
            pos = 0
        self._pos = pos + 36
        return text[pos : pos + 36]


def _uuid_batch(count: int) -> str:
    """`count` random version-4 UUID strings, concatenated (36 characters each)."""
    raw = os.urandom(16 * count)
    if _FAST_UUID4_TEXT is not None:  # (compiled: the same text, written in C)
        return _FAST_UUID4_TEXT(raw)
    return _uuid_text(raw)


def _uuid_text(raw: bytes) -> str:
    """A version-4 UUID string per 16 bytes of `raw`, concatenated: its hex digits, with the
    version in the 13th and the variant from the 17th's two low bits."""
    count = len(raw) // 16
    digits = binascii.hexlify(raw)
    out = bytearray(b"-" * (36 * count))
    for target, source in _UUID_DIGITS:  # one strided copy per digit position
        out[target::36] = digits[source::32]
    out[14::36] = b"4" * count
    out[19::36] = digits[16::32].translate(_UUID_VARIANT)
    return out.decode("ascii")


_UUID_BATCH: Final = 256
# (position in the UUID string, random hex digit) of the 30 digits copied as drawn: the digit
# 12 is replaced by the version and the digit 16 becomes the variant nibble.
_UUID_DIGITS: Final = tuple(
    zip(
        (*range(8), *range(9, 13), *range(15, 18), *range(20, 23), *range(24, 36)),
        (*range(12), *range(13, 16), *range(17, 32)),
        strict=True,
    )
)
_UUID_VARIANT: Final = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_FAST_UUID4_TEXT: Final = FAST_UUID4_TEXT  # (a C static when compiled)
_UUIDS: Final = _UuidSource()
