"""Unit tests for sidecar/upstream.py: the pool driven through an in-memory scripted server."""

from __future__ import annotations

import asyncio
import gc
import re
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from sidecar.codec import ByteStream
from sidecar.errors import (
    NoHealthyUpstream,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from sidecar.http import Endpoint, Request, RequestContext
from sidecar.layers.timeout import TimeoutConfig, timeout_layer
from sidecar.upstream import UpstreamConfig, UpstreamPool, dial
from tests.fakes import body_bytes, count_loop_timers

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# what the server does with one complete request: bytes to send, or None to close
Action = Callable[[bytes], bytes | None]


class ServerSide:
    """The upstream end of one in-memory connection."""

    def __init__(self, protocol: asyncio.Protocol, net: FakeNetwork) -> None:
        self.protocol = protocol
        self.net = net
        self.received = bytearray()
        self.requests: list[bytes] = []
        self.closed = False

    # transport API used by the pool's protocol
    def write(self, data: bytes) -> None:
        self.received += data
        self._maybe_answer()

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self._lose()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.protocol.data_received(data)

    def _lose(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def _maybe_answer(self) -> None:
        data = bytes(self.received)
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return
        head = data[: end + 4]
        match = re.search(rb"content-length: (\d+)", head)
        if match and len(data) < end + 4 + int(match.group(1)):
            return
        if b"transfer-encoding: chunked" in head and not data.endswith(b"0\r\n\r\n"):
            return
        self.received.clear()
        self.requests.append(data)
        action = self.net.actions.popleft() if self.net.actions else (lambda _: OK)
        answer = action(data)
        loop = asyncio.get_running_loop()
        if answer is None:
            self._lose()
        else:
            loop.call_soon(self.send, answer)


class FakeNetwork:
    """A connector for UpstreamPool that hands out in-memory connections."""

    def __init__(self) -> None:
        self.servers: list[ServerSide] = []
        self.actions: deque[Action] = deque()
        self.refuse = False
        self.hang = False

    async def connect(self, factory: Callable[[], Any], host: str, port: int) -> tuple[Any, Any]:
        if self.refuse:
            raise ConnectionRefusedError(111, "Connection refused")
        if self.hang:
            await asyncio.sleep(3600)
        protocol = factory()
        server = ServerSide(protocol, self)
        self.servers.append(server)
        protocol.connection_made(server)
        return server, protocol


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


EP = Endpoint("10.0.0.1", 8080)


def request(body: Any = b"", method: str = "GET", **context: Any) -> Request:
    return Request(
        method=method,
        target="/p?q=1",
        headers=(("host", "svc"), ("x-a", "1"), ("connection", "keep-alive")),
        body=body,
        authority="svc",
        context=RequestContext(endpoint=EP, **context),
    )


@pytest.fixture
def net() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def pool(net: FakeNetwork, clock: FakeClock) -> Any:
    pool = UpstreamPool(UpstreamConfig(idle_expiry_s=4.0), clock=clock, connect=net.connect)
    yield pool
    await pool.close()


async def test_keep_alive_connection_is_reused(pool: UpstreamPool, net: FakeNetwork) -> None:
    first = await pool(request())
    second = await pool(request())
    assert (first.status, first.body, second.body) == (200, b"ok", b"ok")
    assert len(net.servers) == 1
    assert pool.stats()["connections_reused"] == 1


async def test_request_head_is_serialised_without_hop_by_hop_headers(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    await pool(request(body=b"abc", method="POST"))
    sent = net.servers[0].requests[0]
    assert sent.startswith(b"POST /p?q=1 HTTP/1.1\r\nhost: svc\r\n")
    assert b"x-a: 1\r\n" in sent and b"connection" not in sent
    assert sent.endswith(b"content-length: 3\r\n\r\nabc")


async def test_streamed_request_body_without_length_is_sent_chunked(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    body = ByteStream(None, pause=lambda: None, resume=lambda: None)
    body.feed(b"hello")
    body.feed_eof()
    response = await pool(request(body=body, method="POST"))
    assert response.status == 200
    sent = net.servers[0].requests[0]
    assert b"transfer-encoding: chunked\r\n" in sent
    assert sent.endswith(b"5\r\nhello\r\n0\r\n\r\n")


async def test_streamed_response_returns_the_connection_once_read(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    net.actions.append(
        lambda _: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    response = await pool(request())
    body = response.body
    assert not isinstance(body, bytes)
    assert body.length is None
    assert dict(response.headers).get("transfer-encoding") is None
    assert await body.read() == b"abc"
    net.servers[0].send(b"0\r\n\r\n")
    assert await body.read() == b""
    await pool(request())
    assert len(net.servers) == 1  # reused after the body ended


async def test_dropping_an_unread_body_closes_its_connection(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    net.actions.append(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    response = await pool(request())
    del response
    gc.collect()
    await asyncio.sleep(0)
    assert net.servers[0].closed
    await pool(request())
    assert len(net.servers) == 2


async def test_stale_pooled_connection_is_retried_once_on_a_fresh_one(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    await pool(request())
    net.actions.append(lambda _: None)  # the app closed the idle connection as we reused it
    response = await pool(request())
    assert response.status == 200
    assert len(net.servers) == 2
    assert pool.stats()["stale_retries"] == 1


async def test_reset_before_any_response_on_a_fresh_connection_is_upstream_reset(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    net.actions.append(lambda _: None)
    with pytest.raises(UpstreamReset):
        await pool(request())


async def test_reset_mid_body_fails_the_body_stream(pool: UpstreamPool, net: FakeNetwork) -> None:
    net.actions.append(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    response = await pool(request())
    assert not isinstance(response.body, bytes)
    assert await response.body.read() == b"abc"
    net.servers[0].close()
    with pytest.raises(UpstreamReset):
        await response.body.read()


async def test_garbage_response_is_a_protocol_error(pool: UpstreamPool, net: FakeNetwork) -> None:
    net.actions.append(lambda _: b"NOT HTTP AT ALL\r\n\r\n")
    with pytest.raises(UpstreamProtocolError):
        await pool(request())


async def test_refused_and_timed_out_connects_are_connect_errors(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    net.refuse = True
    with pytest.raises(UpstreamConnectError, match="refused"):
        await pool(request())
    net.refuse, net.hang = False, True
    with pytest.raises(UpstreamConnectError, match="timed out"):
        await pool(request(connect_timeout_s=0.001))


async def test_no_response_before_the_deadline_is_an_upstream_timeout(
    pool: UpstreamPool, net: FakeNetwork, clock: FakeClock
) -> None:
    net.actions.append(lambda _: b"")
    with pytest.raises(UpstreamTimeout):
        await pool(request(deadline=clock.now + 0.001))
    assert net.servers[0].closed


async def test_idle_connections_expire(
    pool: UpstreamPool, net: FakeNetwork, clock: FakeClock
) -> None:
    await pool(request())
    clock.now += 5.0
    await pool(request())
    assert len(net.servers) == 2
    assert net.servers[0].closed


async def test_head_response_keeps_content_length_and_has_no_body(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    net.actions.append(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
    response = await pool(request(method="HEAD"))
    assert response.body == b""
    assert dict(response.headers)["content-length"] == "99"
    await pool(request())
    assert len(net.servers) == 1


async def test_interim_1xx_response_is_skipped(pool: UpstreamPool, net: FakeNetwork) -> None:
    net.actions.append(lambda _: b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK)
    response = await pool(request())
    assert (response.status, response.body) == (200, b"ok")


async def test_request_without_an_endpoint_is_refused(pool: UpstreamPool) -> None:
    with pytest.raises(NoHealthyUpstream):
        await pool(Request(method="GET"))


async def test_response_without_length_ends_when_the_upstream_closes(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    net.actions.append(lambda _: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one ")
    response = await pool(request())
    assert not isinstance(response.body, bytes)
    net.servers[0].send(b"part two")
    net.servers[0].close()
    assert await response.body.read_all() == b"part one part two"  # type: ignore[attr-defined]


async def test_the_timeout_layer_and_the_header_wait_share_one_timer(
    pool: UpstreamPool, net: FakeNetwork, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    timers = count_loop_timers(monkeypatch)
    handler = timeout_layer(TimeoutConfig(request_s=0.02, propagate=False), clock=clock)(pool)

    assert (await handler(request())).status == 200  # answered: its deadline entry cancelled
    assert timers == [0.02]  # the one loop timer of the layer's deadline queue

    # no answer: the shared timer ends the header wait with the upstream's own error
    net.actions.append(lambda _: b"")
    timers.clear()
    req = request()
    ctx = req.context
    with pytest.raises(UpstreamTimeout, match=r"after 0\.02s") as info:
        await handler(req)
    assert type(info.value) is UpstreamTimeout and "meshlens.timeout.fired" not in ctx.attributes
    # No timer of its own for this request nor for its header wait: the queue's loop timer
    # (due at the first request's deadline, then re-armed at most once for this one's) ends the
    # header wait, and the request's timer re-arms 1 ms once it ended it. (2.0: the pool's
    # idle sweep.)
    assert 0.02 not in timers and timers.count(0.001) == 1
    assert len([d for d in timers if 0.001 < d < 0.02]) <= 1
    assert not [d for d in timers if 0.02 < d and d != 2.0]
    assert ctx.deadline_timer is None
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_the_shared_timer_still_ends_the_request_after_the_header_wait(
    clock: FakeClock,
) -> None:
    """A layer inside the timeout goes on waiting after the header wait timed out (as a retry
    could): the request's own timeout follows a millisecond later, as with two timers."""
    waited: list[bool] = []

    async def inner(req: Request) -> Any:
        timer = req.context.deadline_timer
        assert timer is not None and timer.deadline == req.context.deadline
        wait = asyncio.get_running_loop().create_future()

        def expire() -> bool:
            waited.append(True)
            wait.set_result(None)
            return True

        timer.expire = expire
        await wait  # "the header wait", ended by the shared timer
        await asyncio.sleep(5)  # then the request's timer cancels this

    req = request()
    ctx = req.context
    handler = timeout_layer(TimeoutConfig(request_s=0.01, propagate=False), clock=clock)(inner)
    with pytest.raises(UpstreamTimeout, match=r"after 0\.01s"):
        await handler(req)
    assert waited == [True] and ctx.attributes["meshlens.timeout.fired"] == "request"


async def test_one_kept_alive_connection_parses_each_response_afresh(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    """Responses of every framing one after another on one connection (its parser carried
    over from a cleanly ended response, never from a HEAD response's): each parsed alone."""
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    script: list[tuple[str, bytes, tuple[int, bytes]]] = [
        ("GET", OK, (200, b"ok")),
        ("GET", chunked, (200, b"abcde")),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", (204, b"")),
        ("GET", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK, (200, b"ok")),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", (200, b"")),
        ("GET", b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", (404, b"nope")),
        ("GET", OK, (200, b"ok")),
    ]
    for method, raw, expected in script:
        net.actions.append(_answer(raw))
        response = await pool(request(method=method))
        assert (response.status, await body_bytes(response.body)) == expected
    assert len(net.servers) == 1  # every response kept the connection


def _answer(raw: bytes) -> Action:
    return lambda _: raw


# -- dial: resolving a name itself, then each address in turn (real sockets on loopback; the
# resolver is faked: DNS is not ours to control in a test) ---------------------------------


class _Accepting(asyncio.Protocol):
    accepted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _Accepting.accepted += 1


def _fake_dns(
    monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]
) -> list[tuple[str, int]]:
    """Make the running loop's getaddrinfo answer `answers` (name -> addresses) or fail as an
    unknown name does; returns the queries it saw."""
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, int]] = []

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        seen.append((host, port))
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return seen


async def test_dial_resolves_a_name_and_tries_each_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await asyncio.get_running_loop().create_server(_Accepting, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # 127.0.0.2 has no listener on that port: refused, then the next address is tried
    seen = _fake_dns(monkeypatch, {"svc.test": ["127.0.0.2", "127.0.0.1"]})
    before = _Accepting.accepted
    try:
        conn = await dial(asyncio.Protocol, Endpoint("svc.test", port), tls=None, timeout_s=2.0)
        assert isinstance(conn, asyncio.Protocol)
        await asyncio.sleep(0.05)
        assert _Accepting.accepted == before + 1
        assert seen == [("svc.test", port)]
        # an address literal is not looked up
        await dial(asyncio.Protocol, Endpoint("127.0.0.1", port), tls=None, timeout_s=2.0)
        assert seen == [("svc.test", port)]
    finally:
        server.close()


async def test_dial_reports_an_unknown_name_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {})
    with pytest.raises(UpstreamConnectError) as info:
        await dial(asyncio.Protocol, Endpoint("nowhere.test", 80), tls=None, timeout_s=2.0)
    # (os.strerror of the resolver's EAI_ code read "Unknown error -2")
    assert str(info.value) == "connect to nowhere.test:80 failed: Name or service not known"


async def test_dial_cancelled_while_resolving_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[list[tuple[Any, ...]]] = loop.create_future()

    def getaddrinfo(host: str, port: int, **_: Any) -> asyncio.Future[list[tuple[Any, ...]]]:
        return answer

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    task = asyncio.ensure_future(
        dial(asyncio.Protocol, Endpoint("slow.test", 80), tls=None, timeout_s=5.0)
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert answer.cancelled()  # the lookup was awaited, so cancelled with the dial


# -- a response that goes wrong between its head and the exchange taking it up --------------


async def test_bytes_after_a_complete_response_keep_it_not_the_connection(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    # (this waited for the response timeout: the parse error after a whole response woke
    # nobody, the head being in)
    net.actions.append(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcnot http\r\n\r\n")
    response = await asyncio.wait_for(pool(request()), 2)
    assert (response.status, response.body) == (200, b"abc")
    assert net.servers[0].closed
    await pool(request())
    assert len(net.servers) == 2  # not reused


async def test_trailer_fields_of_a_chunked_response_do_not_join_its_head(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    # httptools reports trailer fields through on_header too: arriving with the head, they
    # were appended to it (a set-cookie trailer became a header the client got)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-app: 1\r\n\r\n"
    net.actions.append(lambda _: chunked + b"3\r\nabc\r\n0\r\nset-cookie: s=1\r\nx-t: 2\r\n\r\n")
    response = await asyncio.wait_for(pool(request()), 2)
    assert (response.status, response.body) == (200, b"abc")
    assert [name for name, _ in response.headers] == ["x-app"]
    await pool(request())
    assert len(net.servers) == 1  # the connection stays reusable


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\nraw", "asked for no upgrade"),
        (b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok", "status 600 is not 100-599"),
        (b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok", "status 99 is not 100-599"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "unsupported Transfer-Encoding 'gzip, chunked'",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nok", "'chunked, gzip'"),
    ],
    ids=["101-unasked", "status-600", "status-099", "gzip-chunked", "chunked-gzip"],
)
async def test_a_response_head_the_client_cannot_be_given_is_a_protocol_error(
    pool: UpstreamPool, net: FakeNetwork, raw: bytes, message: str
) -> None:
    # Before: a 101 to a plain GET went to the client, which took the connection as switched;
    # 600 went on; 099 raised ValueError out of the pool (a logged "handler raised", 502
    # proxy_error); gzip-coded bytes reached the client with nothing left to say so.
    net.actions.append(lambda _: raw)
    with pytest.raises(UpstreamProtocolError, match=message):
        await asyncio.wait_for(pool(request()), 2)
    assert net.servers[0].closed


async def test_a_response_head_over_the_limit_is_a_protocol_error(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    # (an app, or a server reached by passthrough, sending a 100 MB header value grew a real
    # sidecar to 250 MB and the header went on to the client; Envoy's limit is 60 KiB)
    long = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70_000 + b"\r\ncontent-length: 2\r\n\r\nok"
    net.actions.append(lambda _: long)  # read whole in one go
    with pytest.raises(UpstreamProtocolError, match="head longer than 65536 bytes"):
        await asyncio.wait_for(pool(request()), 2)
    assert net.servers[0].closed
    net.actions.append(lambda _: b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70_000)  # no end
    with pytest.raises(UpstreamProtocolError, match="head longer than 65536 bytes"):
        await asyncio.wait_for(pool(request()), 2)
    fits = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 60_000 + b"\r\ncontent-length: 2\r\n\r\nok"
    net.actions.append(lambda _: fits)
    assert (await asyncio.wait_for(pool(request()), 2)).body == b"ok"


async def test_a_bad_body_before_the_exchange_took_the_head_fails_the_exchange(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\n"
    net.actions.append(lambda _: bad_chunk)
    with pytest.raises(UpstreamProtocolError):  # nothing went downstream yet: a 502
        await asyncio.wait_for(pool(request()), 2)
    assert net.servers[0].closed


async def test_upstream_gone_mid_body_before_the_exchange_resumed(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    net.actions.append(lambda _: b"")
    task = asyncio.ensure_future(pool(request()))
    for _ in range(100):
        await asyncio.sleep(0)
        if net.servers and net.servers[0].requests:
            break
    protocol = net.servers[0].protocol
    # the head, part of the body and the close, all before the exchange's task runs again
    protocol.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    protocol.connection_lost(None)
    with pytest.raises(UpstreamReset, match="mid-body"):
        await asyncio.wait_for(task, 2)


async def test_dial_refuses_a_host_name_the_resolver_cannot_encode() -> None:
    # (a UnicodeError from the IDNA codec was an "internal proxy error" with a traceback)
    with pytest.raises(UpstreamConnectError, match="not a valid host name"):
        await dial(asyncio.Protocol, Endpoint("ap\x93", 80), tls=None, timeout_s=2.0)


# -- a final whole response goes downstream as it arrives (RequestContext.write_final) ---------


class Downstream:
    """What the codec's write_final would write: (context, response) per call, with whether
    the exchange (the pool call) had already returned then."""

    def __init__(self) -> None:
        self.written: list[tuple[RequestContext, Any, bool]] = []
        self.returned = False

    def __call__(self, context: RequestContext, response: Any) -> None:
        self.written.append((context, response, self.returned))


def through(final: Callable[[Any], bool], **context: Any) -> tuple[Request, Downstream]:
    downstream = Downstream()
    req = request(**context)
    req.context.write_final = downstream
    req.context.final = final
    return req, downstream


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nConnection: keep-alive\r\n\r\nok",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        # declined by sidecar/_h1fast.c (an empty field value): read by llhttp's callbacks,
        # written the same
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Empty:\r\n\r\nok",
    ],
)
async def test_a_final_whole_response_goes_downstream_as_it_arrives(
    pool: UpstreamPool, net: FakeNetwork, answer: bytes
) -> None:
    net.actions.append(lambda _: answer)
    req, downstream = through(lambda response: True)
    response = await pool(req)
    downstream.returned = True
    assert len(downstream.written) == 1
    context, written, after = downstream.written[0]
    assert context is req.context and written is response and not after
    assert req.context.write_final is None  # (used: the route knows it went out)
    assert response.body == b"ok" and response.status in (200, 201)
    assert all(name not in ("connection", "transfer-encoding") for name, _ in response.headers)
    await pool(request())  # the connection went back to the pool as before
    assert len(net.servers) == 1


async def test_a_response_that_is_not_final_waits_for_the_layers(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    net.actions.append(lambda _: b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
    statuses: list[int] = []
    req, downstream = through(lambda response: statuses.append(response.status) or False)
    response = await pool(req)
    assert response.status == 503 and statuses == [503] and downstream.written == []
    assert req.context.write_final is downstream  # (still the codec's to use)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one",  # (ends when the upstream closes)
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart",  # (the rest still to come)
    ],
)
async def test_a_response_still_streaming_is_not_written_as_it_arrives(
    pool: UpstreamPool, net: FakeNetwork, answer: bytes
) -> None:
    net.actions.append(lambda _: answer)
    req, downstream = through(lambda response: True)
    response = await pool(req)
    assert not isinstance(response.body, bytes)
    net.servers[0].send(b" and two" if b"close" in answer else b"more23")
    net.servers[0].close()
    await response.body.read_all()  # type: ignore[attr-defined]
    assert downstream.written == []


async def test_without_both_hooks_nothing_is_written_as_it_arrives(
    pool: UpstreamPool, net: FakeNetwork
) -> None:
    req, downstream = through(lambda response: True)
    req.context.final = None  # (a route that is not fused, or past its first attempt)
    assert (await pool(req)).body == b"ok"
    assert downstream.written == []
