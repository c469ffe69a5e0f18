"""sidecar/_h1fast.c: whatever head it takes, httptools (llhttp) parses to the same message.

The C parsers only ever decline (None) what they do not read exactly as llhttp does; the
codec and the pool then hand the bytes to httptools. These tests hold every accepted input of a
seeded corpus (common heads, and thousands of mutations of them: stray CR/LF, NUL, obs-fold,
spaces before colons, both Content-Length and Transfer-Encoding, ...) against httptools' reading,
and check that the inputs a proxy must refuse or frame carefully are declined. Its head_bytes
must write what sidecar/http.py's Python version writes, byte for byte, and its id formatters
(traceparent, request ids) what their Python versions write.

The module is loaded from build/native by path, so this runs in pure-Python mode too (where the
sidecar does not use it); it needs `make native` (CI builds it, required).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import random
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import httptools
import pytest

from sidecar import _native
from sidecar.codec import _uuid_text
from sidecar.http import _head_bytes
from sidecar.telemetry.context import _format_traceparent

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
LIMIT = 8192


def _load() -> ModuleType:
    path = _native.BUILD_DIR / f"sidecar/_h1fast{SUFFIX}"
    if not path.is_file():
        pytest.skip("sidecar/_h1fast.c is not built (make native)")
    loader = importlib.machinery.ExtensionFileLoader("sidecar._h1fast", str(path))
    spec = importlib.util.spec_from_file_location("sidecar._h1fast", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


fast = _load()


@dataclass
class Message:
    """What httptools' callbacks say about the messages of one input."""

    url: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    method: str = ""
    version: str = ""
    status: int = 0
    keep_alive: bool = False
    upgrade: bool = False
    body: bytes = b""
    complete: bool = False


class Recorder:
    def __init__(self, response: bool) -> None:
        self.messages: list[Message] = []
        self.parser: Any = (
            httptools.HttpResponseParser(self) if response else httptools.HttpRequestParser(self)
        )
        self.response = response

    def on_message_begin(self) -> None:
        self.messages.append(Message())

    def on_url(self, url: bytes) -> None:
        self.messages[-1].url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.messages[-1].headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        m = self.messages[-1]
        m.version = self.parser.get_http_version()
        m.keep_alive = self.parser.should_keep_alive()
        m.upgrade = self.parser.should_upgrade()
        if self.response:
            m.status = self.parser.get_status_code()
        else:
            m.method = self.parser.get_method().decode("ascii")

    def on_body(self, body: bytes) -> None:
        self.messages[-1].body += body

    def on_message_complete(self) -> None:
        self.messages[-1].complete = True


def httptools_reading(data: bytes, response: bool) -> list[Message] | None:
    """The messages httptools reads from `data`, None if it refuses it."""
    recorder = Recorder(response)
    try:
        recorder.parser.feed_data(data)
    except httptools.HttpParserError:
        return None
    return recorder.messages


def check_request(data: bytes, start: int = 0) -> bool:
    """If the fast parser takes the request at data[start:], httptools reads the bytes it
    took as one whole message equal in every part, body included. True when it was taken."""
    parsed = fast.parse_request(data, start, LIMIT)
    if parsed is None:
        return False
    end, method, url, version, headers, keep_alive, body = parsed
    messages = httptools_reading(data[start:end], response=False)
    assert messages is not None, data
    assert len(messages) == 1, data
    m = messages[0]
    assert m.complete and m.body == body and not m.upgrade, data
    assert (m.method, m.url, m.version, m.keep_alive) == (method, url, version, keep_alive), data
    assert m.headers == headers, data
    assert len(url) + sum(len(k) + len(v) + 4 for k, v in headers) <= LIMIT
    return True


def check_response(data: bytes) -> bool:
    """If the fast parser takes `data` as one whole response, httptools reads the same."""
    parsed = fast.parse_response(data, LIMIT)
    if parsed is None:
        return False
    status, headers, body, keep_alive = parsed
    messages = httptools_reading(data, response=True)
    assert messages is not None, data
    assert len(messages) == 1, data
    m = messages[0]
    assert m.complete and not m.upgrade and m.version == "1.1", data
    assert (m.status, m.headers, m.body, m.keep_alive) == (status, headers, body, keep_alive), data
    return True


REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: app\r\n\r\n",
    b"GET /orders/42?x=1&y=%2F HTTP/1.1\r\nHost: orders:8080\r\nUser-Agent: curl/7.88.1\r\n"
    b"Accept: */*\r\n\r\n",
    b"HEAD /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"DELETE /a/b;c=d HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: abc-123\r\n\r\n",
    b"OPTIONS /x HTTP/1.1\r\nHost: x\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-"
    b"b7ad6b7169203331-01\r\nCookie: a=b; c=d\r\n\r\n",
    b"GET /p HTTP/1.1\r\nhost:\tapp\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nExpect: x\r\n\r\n",
    b"POST /submit HTTP/1.1\r\nHost: app\r\n\r\n",
    b"POST /api/orders HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\n"
    b'Content-Length: 21\r\n\r\n{"item": "x", "n": 1}',
    b"PUT /k HTTP/1.0\r\nHost: app\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
]

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 07:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
    b"hello world\n",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\nconnection: close\r\n\r\nno\n",
    b"HTTP/1.1 201 Created\r\nLocation: /orders/1\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'7\r\n{"a": 1\r\nB\r\n, "b": [2]}\r\n0\r\n\r\n',
    b"HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n"
    b"0000A\r\n0123456789\r\n0\r\n\r\n",
]

SPICE = b'\r\n \t:\x00\x7f\x80\xe9"#%/,;=+Aa09-_\x0b\x0c'


def mutations(seed: int, bases: list[bytes], count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            kind = rng.random()
            if kind < 0.35:
                data[at] = rng.choice(SPICE)
            elif kind < 0.6:
                data.insert(at, rng.choice(SPICE))
            elif kind < 0.8:
                del data[at]
            elif kind < 0.9:
                data[at : at + 1] = bytes(data[at : at + 1]).swapcase()
            else:  # a whole line doubled
                lines = bytes(data).split(b"\r\n")
                i = rng.randrange(len(lines))
                lines.insert(i, lines[i])
                data = bytearray(b"\r\n".join(lines))
        out.append(bytes(data))
    return out


def test_the_common_heads_are_taken_and_read_as_httptools_reads_them() -> None:
    assert all(check_request(r) for r in REQUESTS)
    assert all(check_response(r) for r in RESPONSES)


def test_mutated_requests_taken_are_read_as_httptools_reads_them() -> None:
    taken = sum(check_request(d) for d in mutations(7, REQUESTS, 6000))
    assert 300 < taken < 5500  # (the corpus exercises both: taken and declined)


def test_mutated_responses_taken_are_read_as_httptools_reads_them() -> None:
    taken = sum(check_response(d) for d in mutations(11, RESPONSES, 6000))
    assert 200 < taken < 5500


def test_pipelined_requests_are_taken_one_at_a_time_from_an_offset() -> None:
    data = REQUESTS[0] + REQUESTS[1] + b"GET /partial HTTP/1.1\r\nHost: a"
    first = fast.parse_request(data, 0, LIMIT)
    assert first is not None and first[0] == len(REQUESTS[0])
    second = fast.parse_request(data, first[0], LIMIT)
    assert second is not None and second[0] == len(REQUESTS[0]) + len(REQUESTS[1])
    assert second[2] == b"/orders/42?x=1&y=%2F"
    assert fast.parse_request(data, second[0], LIMIT) is None  # incomplete: httptools waits
    assert fast.parse_request(data, len(data) + 1, LIMIT) is None


@pytest.mark.parametrize(
    "data",
    [
        # request smuggling shapes: framing stays with llhttp and the codec's checks
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhell",  # the rest to come
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",  # trailing whitespace
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",  # empty value
        b"GET / HTTP/1.1\r\nHost: \xe9\r\n\r\n",  # obs-text
        b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://app/x HTTP/1.1\r\nHost: app\r\n\r\n",  # absolute-form: httptools
        b"CONNECT app:443 HTTP/1.1\r\nHost: app\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",  # (an Upgrade field at all)
        b"GET / HTTP/1.1\r\nHost: a\r\nUPGRADE: h2c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-hop\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # incomplete
    ],
)
def test_requests_a_proxy_must_frame_or_refuse_carefully_are_declined(data: bytes) -> None:
    assert fast.parse_request(data, 0, LIMIT) is None


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",  # more to come
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1",  # after it
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell",  # the rest to come
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello!",  # bytes after it
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",  # no length
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n folded\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: upgrade\r\n\r\nok",
    ],
)
def test_responses_declined_are_left_to_httptools(data: bytes) -> None:
    assert fast.parse_response(data, LIMIT) is None


def test_heads_over_the_limit_are_declined_so_httptools_refuses_them() -> None:
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * LIMIT + b"\r\n\r\n"
    assert fast.parse_request(big, 0, LIMIT) is None
    assert fast.parse_request(big, 0, 2 * LIMIT) is not None
    big_response = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * LIMIT + b"\r\nContent-Length: 0\r\n\r\n"
    assert fast.parse_response(big_response, LIMIT) is None


def test_header_names_are_lower_cased_and_shared() -> None:
    one = fast.parse_request(b"GET / HTTP/1.1\r\nX-Trace-Mode: a\r\n\r\n", 0, LIMIT)
    two = fast.parse_request(b"GET / HTTP/1.1\r\nx-trace-MODE: b\r\n\r\n", 0, LIMIT)
    assert one is not None and two is not None
    assert one[4][0][0] == "x-trace-mode"
    assert one[4][0][0] is two[4][0][0]  # the cached str, not a new one per message
    long_name = "X-" + "a" * 60
    three = fast.parse_request(f"GET / HTTP/1.1\r\n{long_name}: c\r\n\r\n".encode(), 0, LIMIT)
    assert three is not None and three[4][0][0] == long_name.lower()


def test_bad_arguments_raise_type_errors() -> None:
    with pytest.raises(TypeError):
        fast.parse_request("GET / HTTP/1.1\r\n\r\n", 0, LIMIT)
    with pytest.raises(TypeError):
        fast.parse_response(b"", LIMIT, 1)


def test_head_bytes_writes_what_the_python_version_writes() -> None:
    rng = random.Random(5)
    alphabet = "aZ09-: \t\r\né\u00ff\u0100€😀"  # (the last three are not latin-1: '?')
    names = ["host", "connection", "content-length", "x-a", "upgrade", "Set-Cookie", "é"]
    for _ in range(2000):
        headers = [
            (rng.choice(names), "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))))
            for _ in range(rng.randint(0, 8))
        ]
        skip = frozenset(rng.sample(names, rng.randint(0, 3)))
        first = rng.choice(["GET / HTTP/1.1\r\n", "HTTP/1.1 200 OK\r\n", "GET /€ HTTP/1.1\r\n"])
        tail = rng.choice(["\r\n", "content-length: 5\r\n\r\n", "x: ✓\r\n\r\n"])
        expected = _head_bytes(first, headers, skip, tail)
        assert fast.head_bytes(first, headers, skip, tail) == expected
        assert fast.head_bytes(first, tuple(headers), skip, tail) == expected
        assert fast.head_bytes(first, iter(headers), set(skip), tail) == expected


def test_head_bytes_refuses_what_is_not_a_head() -> None:
    with pytest.raises(TypeError):
        fast.head_bytes("GET / HTTP/1.1\r\n", [("a", 1)], frozenset(), "\r\n")
    with pytest.raises(TypeError):
        fast.head_bytes("GET / HTTP/1.1\r\n", [("a", "b", "c")], frozenset(), "\r\n")
    with pytest.raises(TypeError):
        fast.head_bytes("GET / HTTP/1.1\r\n", [("a", "b")], ["a"], "\r\n")
    with pytest.raises(TypeError):
        fast.head_bytes(b"GET", [], frozenset(), "\r\n")
    with pytest.raises(TypeError):
        fast.head_bytes("GET / HTTP/1.1\r\n", 5, frozenset(), "\r\n")


def test_fields_up_to_the_cap_are_taken_and_one_more_is_declined() -> None:
    def request(fields: int) -> bytes:
        lines = "".join(f"X-F{i}: v{i}\r\n" for i in range(fields))
        return f"GET / HTTP/1.1\r\n{lines}\r\n".encode()

    taken = fast.parse_request(request(100), 0, LIMIT)
    assert taken is not None
    assert taken[4] == [(f"x-f{i}", f"v{i}") for i in range(100)]
    assert fast.parse_request(request(101), 0, LIMIT) is None  # (httptools reads it then)
    response = b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"Content-Length: 0\r\n\r\n"
    assert fast.parse_response(response, LIMIT) is None


def test_traceparent_writes_what_the_python_version_writes() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        trace_id = rng.randbytes(rng.choice([16, 16, 16, 0, 1, 8, 33]))
        span_id = rng.randbytes(rng.choice([8, 8, 8, 0, 3, 16]))
        flags = rng.randrange(256)
        expected = _format_traceparent(trace_id, span_id, flags)
        assert fast.traceparent(trace_id, span_id, flags) == expected
    assert fast.traceparent(b"\xff" * 16, b"\x00" * 8, 255) == f"00-{'f' * 32}-{'0' * 16}-ff"


def test_traceparent_refuses_what_is_not_one() -> None:
    for flags in (-1, 256):
        with pytest.raises(ValueError):
            fast.traceparent(bytes(16), bytes(8), flags)
    with pytest.raises(TypeError):
        fast.traceparent("00" * 16, bytes(8), 1)
    with pytest.raises(TypeError):
        fast.traceparent(bytes(16), bytes(8), 1.0)
    with pytest.raises(TypeError):
        fast.traceparent(bytes(16), bytes(8))


def test_uuid4_text_writes_what_the_python_version_writes() -> None:
    rng = random.Random(11)
    for count in (0, 1, 2, 3, 17, 256):
        raw = rng.randbytes(16 * count)
        assert fast.uuid4_text(raw) == _uuid_text(raw)
    every_byte = bytes(range(256))  # each value at each of the 16 positions
    assert fast.uuid4_text(every_byte) == _uuid_text(every_byte)
    with pytest.raises(TypeError):
        fast.uuid4_text(bytes(15))
    with pytest.raises(TypeError):
        fast.uuid4_text(bytearray(16))


# -- OTLP span batches: encode_spans against TraceEncoder's Python encoding ---------------------


def _random_span(rng: random.Random, template_cache: dict[str, Any]) -> Any:
    from sidecar.telemetry.spans import AttrTemplate, SpanRecord

    texts = ["GET", "reviews", "/api/x", "é", "日本", "", "a" * 300, "x-😀"]
    values: list[Any] = [
        *texts, 0, 1, 200, -1, -(2**63), 2**63 - 1, 127, 128, 16384, True, False, 0.5, -1e300,
    ]  # fmt: skip
    keys = [f"k{i}" for i in range(rng.randint(0, 12))]
    attributes = {key: rng.choice(values) for key in keys}
    template = None
    if keys and rng.random() < 0.3:  # (a template: its fixed values are the span's)
        varying = set(rng.sample(keys, rng.randint(0, len(keys))))
        items = tuple((k, None if k in varying else v) for k, v in attributes.items())
        # (one per shape, its value types too: True == 1 must not share one)
        shape = repr(tuple((k, type(v).__name__, v) for k, v in items))
        template = template_cache.setdefault(shape, AttrTemplate(items))
    return SpanRecord(
        trace_id=rng.randbytes(16),
        span_id=rng.randbytes(8),
        parent_span_id=rng.choice([b"", rng.randbytes(8)]),
        name=rng.choice(texts[:5]),
        kind=rng.randint(0, 5),
        start_ns=rng.randrange(2**63),
        end_ns=rng.randrange(2**63),
        flags=rng.randrange(256),
        status=rng.randint(0, 2),
        attributes=attributes,
        tracestate=rng.choice(["", "rojo=00f067aa0ba902b7", "é=1"]),
        status_message=rng.choice(["", "", "boom", "ü"]),
        template=template,
    )


def test_encode_spans_writes_what_the_python_encoder_writes() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from sidecar.telemetry.otlp import TraceEncoder

    rng = random.Random(13)
    templates: dict[str, Any] = {}
    encoder = TraceEncoder([("service.name", "web"), ("n", 3)], scope_version="1.0")
    for size in [0, 1, 2, 3, 5, 8, 13, 40, 200]:
        for _ in range(20):
            spans = [_random_span(rng, templates) for _ in range(size)]
            python = encoder.encode(iter(spans))  # (not a list: the Python encoding)
            assert fast.encode_spans(encoder._resource, encoder._scope, spans) == python
    parsed = ExportTraceServiceRequest.FromString(python)
    assert len(parsed.resource_spans[0].scope_spans[0].spans) == 200


def test_encode_spans_declines_what_only_the_python_encoder_writes() -> None:
    from sidecar.telemetry.otlp import TraceEncoder

    rng = random.Random(17)
    encoder = TraceEncoder([("service.name", "web")])
    for odd in ["\ud800", "a\udcffb", 2**64, 2**63]:
        span = _random_span(rng, {})._replace(attributes={"k": "v", "odd": odd}, template=None)
        assert fast.encode_spans(encoder._resource, encoder._scope, [span]) is None
        assert encoder.encode([span]) == encoder.encode(iter([span]))  # (encoded in Python)
    for change in [
        {"name": "\udcff"},
        {"tracestate": "\ud800"},
        {"parent_span_id": b"\x01" * 7},
        {"flags": -1},
        {"status": 200},
    ]:
        span = _random_span(rng, {})._replace(**change)
        assert fast.encode_spans(encoder._resource, encoder._scope, [span]) is None
    with pytest.raises(TypeError):
        fast.encode_spans(encoder._resource, encoder._scope, ())
