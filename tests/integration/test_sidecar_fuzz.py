"""Mutational fuzzing of what crosses the sidecar's HTTP/1.1 boundaries, with a fixed seed.

Request heads from a client (both listeners) and responses from the app are mutated (bytes
cut, inserted, flipped, duplicated; header lines that matter for framing and routing spliced
in) and sent through a real in-process sidecar over loopback sockets. Per case, what must hold
whatever the bytes were:
- the app never gets a request with both Content-Length and Transfer-Encoding, two lengths,
  two Hosts, or a hop-by-hop field (no smuggling of framing or connection options);
- the app gets no more requests than the client got responses from it, and each carries the
  traceparent the sidecar puts on every request it forwards (no request smuggled past the
  proxy's own parse; the app declines upgrades, reading on as HTTP/1.1 as most apps do);
- every response the sidecar makes itself (the app only ever answers 200, or a reply the case
  wrote) carries x-meshlens-error;
- after a broken response from the app, the next response on that client connection is the
  app's next answer or a marked proxy error (no desync), and the exchange ends (the app closes
  after each broken answer: the sidecar must answer or close, not wait);
and at the end the sidecar serves a plain request on both listeners and logged no error.
Earlier runs of these fuzzers found the bugs pinned in test_codec.py (Host) and
test_upstream.py (responses broken after their head, resolver failures). The Upgrade seeds and
the traceparent check came with the fix for an Upgrade request's body (test_codec.py: it was
dropped, which these invariants do not see; they guard the new reading of such bodies).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools
import pytest

from sidecar.app import Sidecar

pytestmark = pytest.mark.timeout(120)

Sidecars = Callable[..., Awaitable[Sidecar]]

REQUESTS = [
    b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET http://app/abs HTTP/1.1\r\nHost: app\r\n\r\n",
    b"GET /k HTTP/1.0\r\nHost: app\r\nConnection: keep-alive\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: app\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
    b"Content-Length: 30\r\n\r\nGET /in-body HTTP/1.1\r\nHost: a\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfirst",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nfirst",
]
PIECES = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"\x00", b"\x7f", b"\xff",
    b"Content-Length: 0\r\n", b"Content-Length: 3\r\n", b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding : chunked\r\n", b"Host: other\r\n", b"Connection: close\r\n",
    b"Connection: x-opt\r\nx-opt: 1\r\n", b"Expect: 100-continue\r\n", b"Keep-Alive: timeout=5\r\n",
    b"Proxy-Connection: keep-alive\r\n", b"GET / HTTP/1.1\r\nHost: app\r\n\r\n", b"0\r\n\r\n",
    b"ffffffffffffffff\r\n", b"HTTP/1.1", b"x" * 9000,
    b"Connection: upgrade\r\nUpgrade: websocket\r\n", b"Upgrade: h2c\r\n", b"x-trailer: 1\r\n",
    b"x-meshlens-timeout-ms: \xb2\r\n", b"x-meshlens-timeout-ms: " + b"9" * 400 + b"\r\n",
    b"Retry-After: \xb2\r\n",
]  # fmt: skip
HOP_BY_HOP = {"keep-alive", "proxy-connection", "te", "trailer", "upgrade"}
PLAIN = b"GET /plain HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
# the app's only answers: 200 with this body, or (response fuzzing) the case's bytes
APP_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
SECOND = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond"


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(out) + 1)
        op = rng.randrange(5)
        if op == 0 and out:
            start = pos % len(out)
            del out[start : start + rng.randint(1, 8)]
        elif op == 1:
            out[pos:pos] = rng.choice(PIECES)
        elif op == 2 and out:
            out[pos % len(out)] = rng.randrange(256)
        elif op == 3:
            out[pos:pos] = out[rng.randrange(len(out) + 1) :][: rng.randint(1, 40)]
        else:  # a header line right after the first line
            first = out.find(b"\r\n") + 2
            out[first:first] = rng.choice(PIECES)
    return bytes(out)


@dataclass
class AppRequest:
    path: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class FuzzApp:
    """The upstream app: records each request it parses; answers 200 'ok', or `first` to a
    path starting /one (then closes, ending a body that has no length)."""

    seen: list[AppRequest] = field(default_factory=list)
    first: bytes = b""

    def protocol(self) -> asyncio.Protocol:
        app = self

        class Conn(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport: asyncio.Transport = transport  # type: ignore[assignment]
                self.parser = httptools.HttpRequestParser(self)
                self.url = b""
                self.headers: list[tuple[str, bytes]] = []

            def data_received(self, data: bytes) -> None:
                for _ in range(100):  # (bounded: one read's upgrade requests)
                    try:
                        self.parser.feed_data(data)
                    except httptools.HttpParserUpgrade as upgrade:
                        # declined (answered 200 already): what follows is read as HTTP/1.1
                        self.parser = httptools.HttpRequestParser(self)
                        data = data[int(upgrade.args[0]) :]
                        if data:
                            continue
                    except httptools.HttpParserError:
                        app.seen.append(AppRequest(b"<unparsable>", []))
                        self.transport.close()
                    return

            def on_message_begin(self) -> None:
                self.url, self.headers = b"", []

            def on_url(self, url: bytes) -> None:
                self.url += url

            def on_header(self, name: bytes, value: bytes) -> None:
                self.headers.append((name.decode("latin-1").lower(), value))

            def on_message_complete(self) -> None:
                app.seen.append(AppRequest(self.url, self.headers))
                if self.url.startswith(b"/one"):
                    self.transport.write(app.first)
                    self.transport.close()
                else:
                    self.transport.write(SECOND if self.url.startswith(b"/two") else APP_OK)

        return Conn()


class Responses:
    """HTTP responses parsed from what a client connection received."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, dict[str, bytes], bytes]] = []
        self.broken = False
        self._headers: dict[str, bytes] = {}
        self._body = b""

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.broken = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            self.done.append((status, self._headers, self._body))
        self._headers, self._body = {}, b""


async def exchange(
    address: tuple[str, int], data: bytes, then: bytes = b"", settle_s: float = 2.0
) -> tuple[Responses, bool]:
    """Send `data` (and `then` once a first response came back, if the connection is still
    open); read until the sidecar closes or `settle_s` passes without a byte. Returns the
    parsed responses and whether the connection was closed by the sidecar."""
    reader, writer = await asyncio.open_connection(*address)
    responses = Responses()
    closed = False
    try:
        writer.write(data)
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), settle_s)
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                closed = True
                break
            responses.feed(chunk)
            if then and responses.done:
                writer.write(then)
                then = b""
    finally:
        writer.close()
    return responses, closed


def check_app_request(request: AppRequest) -> list[str]:
    problems = []
    names = [name for name, _ in request.headers]
    if request.path == b"<unparsable>":
        problems.append("the app could not parse what the sidecar sent")
    if "content-length" in names and "transfer-encoding" in names:
        problems.append("Content-Length and Transfer-Encoding reached the app")
    if names.count("content-length") > 1 or names.count("host") > 1:
        problems.append("a second Content-Length or Host reached the app")
    nominated = {
        option.strip().decode("latin-1").lower()
        for name, value in request.headers
        if name == "connection"
        for option in value.split(b",")
    }
    leaked = (HOP_BY_HOP | nominated) & set(names) - {"upgrade"}
    if leaked:
        problems.append(f"hop-by-hop fields reached the app: {sorted(leaked)}")
    if names.count("traceparent") != 1:  # (the seeds and pieces carry none)
        problems.append(f"a request the sidecar did not forward reached the app: {request.path!r}")
    return problems


def unmarked(responses: tuple[tuple[int, dict[str, bytes], bytes], ...]) -> list[str]:
    """The app answers 200 only: anything else must be the sidecar's own, marked."""
    return [
        f"an unmarked {status}"
        for status, headers, _ in responses
        if status != 200 and "x-meshlens-error" not in headers
    ]


async def _fuzz_sidecar(sidecars: Sidecars, app: FuzzApp) -> tuple[Sidecar, int]:
    server = await asyncio.get_running_loop().create_server(app.protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # registry_only: a fuzzed Host is never passed through. It left loopback (Host "5" is
    # 0.0.0.5:80, which this machine's egress proxy answered with an unmarked 404: seed 12)
    config = {
        "outbound_policy": "registry_only",
        "upstreams": {"app": {"endpoints": [f"127.0.0.1:{port}"]}},
    }
    return await sidecars("fuzz", port, config=config), port


async def _still_serving(sidecar: Sidecar) -> None:
    assert sidecar.addresses is not None
    for address in (sidecar.addresses.outbound, sidecar.addresses.inbound):
        responses, _ = await exchange(address, PLAIN)
        assert [(s, b) for s, _, b in responses.done] == [(200, b"ok")]


Case = Callable[[FuzzApp, tuple[str, int], random.Random], Awaitable[tuple[bytes, list[str]]]]


async def _fuzz(
    sidecars: Sidecars, caplog: pytest.LogCaptureFixture, seed: int, count: int, case: Case
) -> None:
    """Run `count` cases (alternating listeners) against one sidecar; none may find a
    problem, and the sidecar must serve and have logged no error afterwards."""
    caplog.set_level(logging.ERROR)
    app = FuzzApp()
    sidecar, _ = await _fuzz_sidecar(sidecars, app)
    assert sidecar.addresses is not None
    rng = random.Random(seed)
    failures = []
    for number in range(count):
        address = sidecar.addresses.outbound if number % 2 else sidecar.addresses.inbound
        sent, problems = await case(app, address, rng)
        if problems:
            failures.append((sent, problems))
    assert failures == []
    await _still_serving(sidecar)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def _request_case(
    app: FuzzApp, address: tuple[str, int], rng: random.Random
) -> tuple[bytes, list[str]]:
    payload = mutate(rng, rng.choice(REQUESTS))
    before = len(app.seen)
    # a plain request after the case's bytes: the sidecar answers all, then closes
    responses, closed = await exchange(address, payload + PLAIN)
    await asyncio.sleep(0.01)
    arrived = app.seen[before:]
    problems = [p for request in arrived for p in check_app_request(request)]
    problems += unmarked(tuple(responses.done))
    if responses.broken:
        problems.append("the sidecar sent bytes that are not an HTTP response")
    answered = sum(1 for status, _, _ in responses.done if status == 200)
    if closed and len(arrived) > answered:
        problems.append(f"the app got {len(arrived)} requests, the client {answered} answers")
    return payload, problems


ONE = b"GET /one HTTP/1.1\r\nHost: app\r\n\r\n"
TWO = b"GET /two HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"


async def _response_case(
    app: FuzzApp, address: tuple[str, int], rng: random.Random
) -> tuple[bytes, list[str]]:
    app.first = mutate(rng, rng.choice(RESPONSES))
    responses, closed = await exchange(address, ONE, then=TWO)
    problems = []
    if not closed:  # the app closes after its answer, the client's last request says close
        problems.append("neither an answer nor a close within 2 s")
    if responses.broken:
        problems.append("the sidecar sent bytes that are not an HTTP response")
    for status, headers, body in responses.done[1:]:  # the answers after the broken one
        if "x-meshlens-error" not in headers and (status, body) != (200, b"second"):
            problems.append(f"desync: the second answer was {status} {body[:40]!r}")
    return app.first, problems


async def test_fuzzed_request_heads_never_smuggle_or_leak_framing(
    sidecars: Sidecars, caplog: pytest.LogCaptureFixture
) -> None:
    await _fuzz(sidecars, caplog, 20261126, 400, _request_case)


async def test_fuzzed_app_responses_never_desync_the_client_connection(
    sidecars: Sidecars, caplog: pytest.LogCaptureFixture
) -> None:
    await _fuzz(sidecars, caplog, 1126, 300, _response_case)
