"""Unit tests for sidecar/codec.py: the server protocol driven through an in-memory transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sidecar.codec import (
    ByteStream,
    DownstreamClosed,
    HttpServer,
    RequestTimeout,
    ServerConfig,
    _length_end,
    _request_uuid,
    _ServerProtocol,
)
from sidecar.errors import UpstreamReset
from sidecar.http import Request, Response
from sidecar.loops import OutgoingConnections
from sidecar.peers import LocalAddresses
from sidecar.stack import Handler


class FakeTransport:
    """Records what the protocol writes; no sockets."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.eof_written = False

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.out += part

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.0.0.7", 5555), "sockname": ("127.0.0.1", 15001)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True


class Recorder:
    """A handler that records requests and answers with a scripted response."""

    def __init__(self, respond: Any = None) -> None:
        self.requests: list[Request] = []
        self.bodies: list[bytes] = []
        self.respond = respond

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        body = request.body
        if isinstance(body, ByteStream):
            body = await body.read_all()
        assert isinstance(body, bytes)
        self.bodies.append(body)
        if self.respond is not None:
            response: Response = await self.respond(request)
            return response
        return Response(200, (("x-app", "1"),), f"ok {request.target}".encode())


def connect(handler: Handler, **config: Any) -> tuple[HttpServer, _ServerProtocol, FakeTransport]:
    server = HttpServer(ServerConfig(**config), lambda: handler)
    protocol = _ServerProtocol(server)
    transport = FakeTransport(protocol)
    protocol.connection_made(transport)
    return server, protocol, transport


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def served(
    raw: bytes, handler: Recorder | None = None, **config: Any
) -> tuple[Recorder, FakeTransport]:
    """`raw` read by a new connection in one go, once the loop has settled."""
    handler = handler or Recorder()
    _, protocol, transport = connect(handler, **config)
    protocol.data_received(raw)
    await settle()
    return handler, transport


def responses(out: bytes) -> list[bytes]:
    return [part for part in out.split(b"HTTP/1.1 ")[1:]]


async def test_pipelined_requests_are_answered_in_request_order() -> None:
    release = asyncio.Event()

    async def respond(request: Request) -> Response:
        if request.target == "/slow":
            await release.wait()
        return Response(200, (), request.target.encode())

    handler = Recorder(respond)
    _, protocol, transport = connect(handler)
    protocol.data_received(
        b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /fast HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    await settle()
    assert transport.out == b""  # /fast waits behind /slow
    release.set()
    await settle()
    out = bytes(transport.out)
    assert out.index(b"/slow") < out.index(b"/fast")
    assert [r.target for r in handler.requests] == ["/slow", "/fast"]
    assert not transport.closed


@pytest.mark.parametrize(
    ("status", "reason", "line"),
    [
        (200, "", b"HTTP/1.1 200 OK\r\n"),
        (200, "OK", b"HTTP/1.1 200 OK\r\n"),
        (200, "Fine", b"HTTP/1.1 200 Fine\r\n"),  # an upstream's own phrase is kept
        (404, "", b"HTTP/1.1 404 Not Found\r\n"),
        (599, "", b"HTTP/1.1 599 Unknown\r\n"),
        (599, "Odd", b"HTTP/1.1 599 Odd\r\n"),
    ],
)
@pytest.mark.parametrize(
    ("version", "ending"),
    [
        (b"1.1", b"content-length: 5\r\n\r\n"),
        (b"1.0", b"content-length: 5\r\nconnection: keep-alive\r\n\r\n"),
    ],
)
async def test_status_line_and_head_end_of_a_buffered_answer(
    status: int, reason: str, line: bytes, version: bytes, ending: bytes
) -> None:
    async def respond(request: Request) -> Response:
        return Response(status, (("x-a", "1"),), b"hello", reason)

    keep = b"Connection: keep-alive\r\n" if version == b"1.0" else b""
    _, transport = await served(
        b"GET / HTTP/" + version + b"\r\nHost: a\r\n" + keep + b"\r\n", Recorder(respond)
    )
    assert bytes(transport.out) == line + b"x-a: 1\r\n" + ending + b"hello"
    assert not transport.closed


def test_head_ends_are_cached_by_length_and_the_cache_stays_bounded() -> None:
    assert _length_end(12) == "content-length: 12\r\n\r\n"
    assert _length_end(12) is _length_end(12)
    for length in range(5000):
        assert _length_end(length) == f"content-length: {length}\r\n\r\n"
    from sidecar import codec

    assert len(codec._LENGTH_ENDS) <= codec._LENGTH_ENDS_MAX


async def test_hop_by_hop_headers_are_stripped_and_forwarding_headers_added() -> None:
    handler = Recorder()
    _, protocol, _ = connect(handler)
    protocol.data_received(
        b"GET /p HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
        b"X-Forwarded-For: 1.2.3.4\r\nX-Keep: yes\r\n\r\n"
    )
    await settle()
    request = handler.requests[0]
    names = [k for k, _ in request.headers]
    for name in ("connection", "x-secret", "keep-alive", "proxy-connection", "te"):
        assert name not in names
    headers = dict(request.headers)
    assert headers["x-keep"] == "yes"
    assert headers["x-forwarded-for"] == "1.2.3.4, 10.0.0.7"
    assert len(headers["x-request-id"]) == 36
    assert request.context.request_id == headers["x-request-id"]
    assert request.authority == "svc"


async def test_existing_request_id_is_kept() -> None:
    handler = Recorder()
    _, protocol, _ = connect(handler)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc\r\n\r\n")
    await settle()
    assert dict(handler.requests[0].headers)["x-request-id"] == "abc"


async def test_absolute_form_target_becomes_authority_and_origin_target() -> None:
    handler = Recorder()
    _, protocol, _ = connect(handler)
    protocol.data_received(b"GET http://reviews:9080/r/1?x=2 HTTP/1.1\r\nHost: reviews\r\n\r\n")
    await settle()
    request = handler.requests[0]
    assert (request.authority, request.target, request.path) == ("reviews:9080", "/r/1?x=2", "/r/1")


async def test_small_sized_body_is_buffered_so_the_request_is_replayable() -> None:
    handler = Recorder()
    _, protocol, _ = connect(handler)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel")
    await settle()
    assert handler.requests == []  # waits for the whole (small) body
    protocol.data_received(b"lo")
    await settle()
    assert handler.requests[0].body == b"hello"
    assert handler.requests[0].replayable


async def test_chunked_body_streams_to_the_handler() -> None:
    handler = Recorder()
    _, protocol, _ = connect(handler)
    protocol.data_received(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    await settle()
    assert len(handler.requests) == 1
    assert not handler.requests[0].replayable
    protocol.data_received(b"6\r\n world\r\n0\r\n\r\n")
    await settle()
    assert handler.bodies == [b"hello world"]


async def test_trailer_fields_of_a_chunked_request_do_not_join_its_head() -> None:
    # httptools reports trailer fields through on_header too: a request read whole in one go
    # had them appended to its head after every check of it, so a trailer x-forwarded-for
    # came after ours (the app's "last hop") and an authorization trailer became a header
    handler, _ = await served(
        b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        b"0\r\nx-forwarded-for: 6.6.6.6\r\nauthorization: Bearer x\r\nhost: evil\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: a\r\nx-next: 1\r\n\r\n"
    )
    first, second = handler.requests
    assert handler.bodies[0] == b"hello"
    names = [name for name, _ in first.headers]
    assert names.count("x-forwarded-for") == 1 and "authorization" not in names
    assert dict(first.headers)["x-forwarded-for"] == "10.0.0.7"
    assert names.count("host") == 1 and first.authority == "a"
    assert dict(second.headers)["x-next"] == "1" and second.target == "/next"


async def test_a_204_goes_out_without_the_content_length_its_upstream_sent() -> None:
    # RFC 9110 8.6: no Content-Length in a 204 or 1xx (a HEAD or 304 answer keeps its own)
    async def respond(request: Request) -> Response:
        status = int(request.target[1:])
        return Response(status, (("content-length", "5"), ("x-app", "1")), b"")

    raw = b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /304 HTTP/1.1\r\nHost: a\r\n\r\n"
    _, transport = await served(raw, Recorder(respond))
    no_content, not_modified = responses(bytes(transport.out))
    assert no_content == b"204 No Content\r\nx-app: 1\r\n\r\n"
    assert not_modified == b"304 Not Modified\r\ncontent-length: 5\r\nx-app: 1\r\n\r\n"


@pytest.mark.parametrize(
    "split",
    [None, 60, 160, 179, 185],  # (the head is 145 bytes, the body 34)
    ids=["one-read", "in-head", "in-body", "at-body-end", "in-next-request"],
)
async def test_an_upgrade_request_with_a_body_is_served_as_http11_with_that_body(
    split: int | None,
) -> None:
    # llhttp ends an upgrade request at its head: its body waited as tunnel bytes (sent only
    # after a 101), so an app declining the upgrade got the POST without it, and /next never
    # came. curl --http2 -d asks h2c so, with its form as the body. (A body that looks like a
    # request must stay a body.)
    handler = Recorder()
    _, protocol, transport = connect(handler)
    smuggled = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    raw = (
        b"POST /form HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
        b"Content-Length: %d\r\n\r\n%sGET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        % (len(smuggled), smuggled)
    )
    assert raw.index(smuggled) == 145
    for part in (raw,) if split is None else (raw[:split], raw[split:]):
        protocol.data_received(part)
        await settle()
    assert [r.target for r in handler.requests] == ["/form", "/next"]
    assert handler.bodies == [smuggled, b""]
    names = [name for name, _ in handler.requests[0].headers]
    assert not {"upgrade", "connection", "http2-settings"} & set(names)
    assert [r.split(b"\r\n")[0] for r in responses(bytes(transport.out))] == [b"200 OK"] * 2
    assert not transport.closed


async def test_an_upgrade_request_with_a_chunked_body_is_refused() -> None:
    handler, transport = await served(
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    assert handler.requests == []
    assert bytes(transport.out).startswith(b"HTTP/1.1 400 ")


async def test_expect_100_continue_is_answered_before_the_body_is_read() -> None:
    handler = Recorder()
    _, protocol, transport = connect(handler)
    protocol.data_received(
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    await settle()
    assert bytes(transport.out) == b"HTTP/1.1 100 Continue\r\n\r\n"
    protocol.data_received(b"abc")
    await settle()
    assert handler.bodies == [b"abc"]
    assert "expect" not in dict(handler.requests[0].headers)


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"BAD\x00LINE\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ap\x93\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /admin#x HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
    ids=[
        "cl-te",
        "two-cl",
        "te-not-chunked",
        "bad-chunk",
        "no-host",
        "bad-line",
        "connect",
        "two-hosts",
        "host-not-ascii",
        "host-with-space",
        "te-gzip-chunked",  # (the app got gzip bytes as the body: now 501)
        "asterisk-not-options",  # (went upstream as GET *; over HTTP/2 a 400 already)
        "fragment",  # (the app read /admin, which a rule on exactly /admin did not match)
    ],
)
async def test_bad_framing_is_refused_without_calling_the_handler(raw: bytes) -> None:
    handler = Recorder()
    _, protocol, transport = connect(handler)
    protocol.data_received(raw)
    await settle()
    assert handler.requests == []
    out = bytes(transport.out)
    assert out.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 405 ", b"HTTP/1.1 501 "))
    assert out.startswith(b"HTTP/1.1 501 ") == (b"gzip, chunked" in raw)
    assert b"x-meshlens-error: bad_request" in out
    assert transport.closed


async def test_oversize_headers_get_431_even_when_split_across_reads() -> None:
    handler = Recorder()
    _, protocol, transport = connect(handler, max_header_bytes=1024)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
    for _ in range(10):
        protocol.data_received(b"v" * 200)
    await settle()
    assert bytes(transport.out).startswith(b"HTTP/1.1 431 ")
    assert handler.requests == []


async def test_streamed_response_without_length_is_chunked_and_http10_closes() -> None:
    async def respond(request: Request) -> Response:
        stream = ByteStream(None, pause=lambda: None, resume=lambda: None)
        stream.feed(b"abc")
        stream.feed(b"de")
        stream.feed_eof()
        return Response(200, (("transfer-encoding", "chunked"),), stream)

    _, protocol, transport = connect(Recorder(respond))
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    out = bytes(transport.out)
    assert out.count(b"transfer-encoding: chunked") == 1
    assert out.endswith(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    _, protocol, transport = connect(Recorder(respond))
    protocol.data_received(b"GET / HTTP/1.0\r\n\r\n")
    await settle()
    out = bytes(transport.out)
    assert b"connection: close" in out and out.endswith(b"abcde")
    assert transport.closed


async def test_head_response_keeps_the_upstream_content_length_without_a_body() -> None:
    async def respond(request: Request) -> Response:
        return Response(200, (("content-length", "1234"),), b"")

    _, protocol, transport = connect(Recorder(respond))
    protocol.data_received(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    assert bytes(transport.out).endswith(b"content-length: 1234\r\n\r\n")


async def test_body_cut_short_mid_stream_aborts_the_downstream_connection() -> None:
    async def respond(request: Request) -> Response:
        stream = ByteStream(10, pause=lambda: None, resume=lambda: None)
        stream.feed(b"abc")
        stream.fail(UpstreamReset("gone"))
        return Response(200, (), stream)

    _, protocol, transport = connect(Recorder(respond))
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    assert transport.aborted


async def test_drain_closes_an_idle_connection_and_lets_a_busy_one_finish() -> None:
    release = asyncio.Event()

    async def respond(request: Request) -> Response:
        await release.wait()
        return Response(200, (), b"done")

    server, busy, busy_transport = connect(Recorder(respond))
    idle = _ServerProtocol(server)
    idle_transport = FakeTransport(idle)
    idle.connection_made(idle_transport)
    busy.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    drain = asyncio.create_task(server.drain(timeout_s=5))
    await settle()
    assert idle_transport.closed and not busy_transport.closed
    release.set()
    assert await drain is True
    assert b"connection: close" in bytes(busy_transport.out)
    assert busy_transport.closed and not busy_transport.aborted


async def test_byte_stream_pauses_above_high_water_and_resumes_when_drained() -> None:
    calls: list[str] = []
    stream = ByteStream(
        None,
        pause=lambda: calls.append("pause"),
        resume=lambda: calls.append("resume"),
        high_water=10,
    )
    for _ in range(4):
        stream.feed(b"12345")
    assert calls == ["pause"]
    for _ in range(4):
        await stream.read()
    assert calls == ["pause", "resume"]
    stream.feed_eof()
    assert await stream.read() == b""
    assert stream.finished


async def test_a_discarded_byte_stream_drops_what_comes_and_never_pauses() -> None:
    calls: list[str] = []
    stream = ByteStream(
        100,
        pause=lambda: calls.append("pause"),
        resume=lambda: calls.append("resume"),
        high_water=10,
    )
    stream.feed(b"x" * 20)
    assert calls == ["pause"]
    reader = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0)
    assert reader.done()  # (the buffered chunk)
    waiting = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0)
    stream.discard()
    assert calls == ["pause", "resume"]
    with pytest.raises(DownstreamClosed, match="abandoned"):
        await waiting  # a reader still there learns nobody feeds it any more
    for _ in range(10):
        stream.feed(b"y" * 20)  # dropped, counted, never paused again
    assert calls == ["pause", "resume"] and stream.received_bytes == 220


async def test_a_body_left_unread_by_an_early_response_is_drained_or_the_connection_closes() -> (
    None
):
    # (the app answered without reading the body: before, the body buffered to the high water
    # mark, reading paused, and a client still sending waited until the idle timeout)
    for length, closes in ((300_000, False), (5_000_000, True)):
        targets: list[str] = []

        async def early(request: Request, seen: list[str] = targets) -> Response:
            seen.append(request.target)  # (the body is never read)
            return Response(401, (), b"nope")

        _, protocol, transport = connect(early, high_water_bytes=1024)
        head = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length
        protocol.data_received(head + b"x" * 70_000)  # (streamed: over the buffered size)
        await settle()
        assert bytes(transport.out).startswith(b"HTTP/1.1 401 ")
        protocol.data_received(b"x" * 50_000)  # still coming: read and dropped, not paused
        await settle()
        assert transport.reading
        if closes:  # more than 1 MiB still due: our side shut, lingering for the client
            assert transport.eof_written and not transport.closed
            protocol.eof_received()
            assert transport.closed
        else:  # the rest drained: the connection serves the next request
            rest = b"x" * (length - 120_000) + b"GET /n HTTP/1.1\r\nHost: a\r\n\r\n"
            protocol.data_received(rest)
            await settle()
            assert targets == ["/up", "/n"]
            assert not transport.closed and not transport.eof_written


async def test_byte_stream_idle_timeout_raises_the_configured_error() -> None:
    stream = ByteStream(None, pause=lambda: None, resume=lambda: None, idle_timeout_s=0.001)
    with pytest.raises(RequestTimeout):
        await stream.read()


def test_server_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="direction"):
        ServerConfig(direction="sideways")
    with pytest.raises(ValueError, match="timeouts"):
        ServerConfig(idle_timeout_s=0)


async def test_a_body_that_fails_unexpectedly_drops_only_that_connection() -> None:
    class Broken:
        length = None

        async def read(self) -> bytes:
            raise RuntimeError("bug in a body wrapper")

    async def respond(request: Request) -> Response:
        return Response(200, (), Broken())

    server, protocol, transport = connect(Recorder(respond))
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    assert transport.aborted
    assert server.connections == set()


def test_request_ids_take_every_digit_at_every_random_position() -> None:
    # ids are formatted a batch at a time: each of the 30 random positions of the string
    # (all but the dashes, the version and the variant) varies over all 16 hex digits
    ids = [_request_uuid() for _ in range(1024)]  # four batches
    random_positions = [i for i in range(36) if i not in (8, 13, 14, 18, 19, 23)]
    for i in random_positions:
        assert {text[i] for text in ids} == set("0123456789abcdef"), i
    assert {text[14] for text in ids} == {"4"}
    assert {text[8] + text[13] + text[18] + text[23] for text in ids} == {"----"}


def test_request_ids_are_random_version_4_uuids() -> None:
    import uuid
    from collections import Counter

    variants: Counter[str] = Counter()
    ids = {_request_uuid() for _ in range(4000)}
    assert len(ids) == 4000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
        variants[text[19]] += 1
    assert set(variants) == set("89ab")  # the variant nibble's two low bits stay random


@pytest.mark.parametrize(
    ("reads", "versions"),
    [
        (  # pipelined in one read, 1.0 between 1.1s
            [
                b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
                b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n"
            ],
            ["1.1", "1.0", "1.1"],
        ),
        (  # the version split across reads, the next read holding only HTTP/1.1
            [
                b"GET /a HTTP/1",
                b".0\r\nConnection: keep-alive\r\n\r\n",
                b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n",
            ],
            ["1.0", "1.1"],
        ),
        (  # the head ends in a read without any HTTP/
            [b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n", b"X-A: b\r\n\r\n"],
            ["1.0"],
        ),
        (  # " HTTP/1.1\r\n" in a header value of a 1.0 request
            [b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\nX-V: a HTTP/1.1\r\n\r\n"],
            ["1.0"],
        ),
        ([b"GET /HTTP/1.1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"], ["1.0"]),  # in the path
        ([b"GET /a HTTP/1.1\r\nHost: a\r\n", b"\r\n"], ["1.1"]),
        (  # reads that end at a request's end
            [
                b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
                b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            ],
            ["1.1", "1.0"],
        ),
        (  # a read that starts inside a body, then a request
            [
                b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab",
                b"cdGET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            ],
            ["1.1", "1.0"],
        ),
        ([b"\r\nGET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"], ["1.0"]),  # leading CRLF
        ([b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n"], ["1.1"]),
        ([b"GET /a HTTP/1.1\r\nHost: a\r\nX-V: HTTP/1.1\r\n\r\n"], ["1.1"]),
    ],
)
async def test_request_versions_are_parsed_whatever_the_reads(
    reads: list[bytes], versions: list[str]
) -> None:
    handler = Recorder()
    _, protocol, transport = connect(handler)
    for data in reads:
        protocol.data_received(data)
    await settle()
    assert [request.version for request in handler.requests] == versions
    assert bytes(transport.out).count(b"HTTP/1.1 200 ") == len(versions)


async def test_options_asterisk_is_passed_on() -> None:
    handler, transport = await served(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [(r.method, r.target) for r in handler.requests] == [("OPTIONS", "*")]
    assert bytes(transport.out).startswith(b"HTTP/1.1 200 ")


async def test_the_target_is_normalized_before_any_layer_sees_it() -> None:
    # (an app resolves /x/../admin and /%61dmin to /admin: a rule on /admin* must see that)
    handler, _ = await served(
        b"GET /x/../%61dmin//y?q=/../%61 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET http://svc/a/./b HTTP/1.1\r\nHost: svc\r\n\r\n"
    )
    assert [r.target for r in handler.requests] == ["/admin/y?q=/../%61", "/a/b"]
    raw, _ = await served(
        b"GET /x/../%61dmin HTTP/1.1\r\nHost: a\r\n\r\n", path_normalization="none"
    )
    assert [r.target for r in raw.requests] == ["/x/../%61dmin"]
    with pytest.raises(ValueError, match="path_normalization"):
        ServerConfig(path_normalization="all")


class _Dialed:
    """A connection a pool dialed: its own end and the far one."""

    def __init__(self, sockname: tuple[str, int], peername: tuple[str, int]) -> None:
        self.ends = {"sockname": sockname, "peername": peername}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.ends.get(name, default)

    def is_closing(self) -> bool:
        return False


async def test_a_request_on_a_connection_the_sidecar_dialed_itself_is_refused_as_a_loop() -> None:
    own = OutgoingConnections()
    # FakeTransport's two ends, seen from the other side: a pool connection of ours
    own.add(_Dialed(("10.0.0.7", 5555), ("127.0.0.1", 15001)))
    handler, transport = await served(
        b"GET / HTTP/1.1\r\nHost: 127.1:15001\r\n\r\n", own_connections=own
    )

    assert handler.requests == []  # not passed on (it went round ~64 times, one socket pair each)
    assert transport.out.startswith(b"HTTP/1.1 404 ")
    assert b"x-meshlens-error: no_route" in transport.out
    assert b"request loop" in transport.out
    assert transport.closed


async def test_an_http2_connection_the_sidecar_dialed_itself_is_closed() -> None:
    own = OutgoingConnections()
    own.add(_Dialed(("10.0.0.7", 5555), ("127.0.0.1", 15001)))
    handler, transport = await served(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", own_connections=own)

    assert handler.requests == [] and transport.aborted


async def test_other_connections_and_listeners_without_the_table_are_served() -> None:
    own = OutgoingConnections()
    own.add(_Dialed(("10.0.0.7", 6666), ("127.0.0.1", 15001)))  # (another port of the host)
    # the client's port, but ours goes to the app: Linux shares a local port between
    # connections to different destinations (a false 404 "request loop" in a benchmark run)
    own.add(_Dialed(("10.0.0.7", 5555), ("127.0.0.1", 8080)))
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"

    handler, transport = await served(raw, own_connections=own)
    assert len(handler.requests) == 1 and transport.out.startswith(b"HTTP/1.1 200 ")
    handler, transport = await served(raw, direction="inbound")  # (no table: not checked)
    assert len(handler.requests) == 1


@pytest.mark.parametrize(
    "line",
    [b"GET /x", b"GET /x HTTP/0.9", b"GET /x HTTP/2.0", b"PRI /2.0"],  # ("PRI * HTTP/2.0": h2)
)
async def test_request_lines_of_other_http_versions_are_refused(line: bytes) -> None:
    # llhttp takes 0.9 (no version) and 2.0 (for the h2 preface); they went upstream as
    # HTTP/1.1, and "PRI /2.0" as a request line the app's parser refused (an h2 fuzz)
    handler, transport = await served(line + b"\r\n\r\n")

    assert handler.requests == []
    (answer,) = responses(bytes(transport.out))
    assert answer.startswith(b"505 ") and b"is not supported" in answer
    assert transport.closed


async def test_a_listener_for_this_host_refuses_a_peer_of_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # (FakeTransport's peer is 10.0.0.7, no address of this host: another pod reaching the
    # outbound listener on the pod's address, to proxy with the pod's identity)
    local = LocalAddresses()
    handler, transport = await served(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", local_peers=local)

    assert handler.requests == []
    assert transport.out.startswith(b"HTTP/1.1 403 ")
    assert b"x-meshlens-error: not_local" in transport.out and transport.closed
    # counted, and logged once however many come (a peer in a loop must not flood the log)
    server, protocol, _ = connect(Recorder(), local_peers=local)
    for _ in range(5):
        protocol = _ServerProtocol(server)
        protocol.connection_made(FakeTransport(protocol))
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert server.refused == {"not_local": 5}
    logged = [r for r in caplog.records if r.getMessage() == "connection refused"]
    assert len(logged) == 2  # (one per server: the first request's, and the five here)
    handler, transport = await served(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", local_peers=local)
    assert handler.requests == [] and transport.aborted


# -- a final response written as it arrives (RequestContext.write_final) ------------------------


async def test_a_final_response_written_as_it_arrives_is_the_one_the_client_gets_once() -> None:
    seen: list[bytes] = []
    transports: list[FakeTransport] = []

    async def respond(request: Request) -> Response:
        context = request.context
        write = context.write_final
        assert write is not None
        write(context, Response(200, (("x-first", "1"),), b"first"))
        seen.append(bytes(transports[0].out))  # (already downstream: the layers' work follows)
        write(context, Response(200, (), b"again"))  # (once only)
        return Response(504, (), b"a timeout that came too late")  # (not written again)

    _, protocol, transport = connect(Recorder(respond))
    transports.append(transport)
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    one = b"HTTP/1.1 200 OK\r\nx-first: 1\r\ncontent-length: 5\r\n\r\nfirst"
    assert seen == [one, one + one]  # each request answered once, in order, as it arrived
    assert bytes(transport.out) == one + one and not transport.closed


async def test_a_final_response_written_as_it_arrives_keeps_the_connection_rules() -> None:
    async def respond(request: Request) -> Response:
        context = request.context
        assert context.write_final is not None
        context.write_final(context, Response(200, (), b"done"))
        return Response(200, (), b"done")

    _, transport = await served(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", Recorder(respond))
    assert bytes(transport.out) == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone"
    )
    assert transport.closed  # (HTTP/1.0 without keep-alive: closed after, as before)


async def test_only_the_request_being_handled_is_written_as_it_arrives() -> None:
    contexts: list[Any] = []

    async def respond(request: Request) -> Response:
        contexts.append(request.context)
        if len(contexts) == 2:  # the first request's context, after its exchange ended
            first = contexts[0]
            first.write_final(first, Response(200, (), b"stale"))
        return Response(200, (), request.target.encode())

    _, transport = await served(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n", Recorder(respond)
    )
    assert b"stale" not in bytes(transport.out)
    assert [part.rsplit(b"\r\n", 1)[-1] for part in responses(bytes(transport.out))] == [
        b"/1",
        b"/2",
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",  # (its answer's length is not its body's)
        # a body still streaming in when the handler starts (over the buffered size)
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
)
async def test_requests_not_answered_as_their_response_arrives(raw: bytes) -> None:
    offered: list[object] = []

    async def handler(request: Request) -> Response:
        offered.append(request.context.write_final)
        return Response(200, (), b"")

    _, protocol, _transport = connect(handler)
    protocol.data_received(raw)
    await settle()
    assert offered == [None]
