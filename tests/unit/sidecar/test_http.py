"""sidecar/http.py: the bounded whole-body read, and the fast Request/Response constructors."""

from __future__ import annotations

import dataclasses

import pytest

from sidecar.errors import BodyTooLarge
from sidecar.http import (
    Endpoint,
    Request,
    RequestContext,
    Response,
    Trailers,
    header_name,
    new_context,
    new_request,
    new_response,
    read_body,
)


class _Chunks:
    """A BodyStream yielding fixed chunks, counting how many were read."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)
        self.reads = 0

    @property
    def length(self) -> int | None:
        return None

    async def read(self) -> bytes:
        self.reads += 1
        return self._chunks.pop(0) if self._chunks else b""


async def test_a_stream_within_the_limit_is_joined() -> None:
    assert await read_body(_Chunks(b"ab", b"cd"), 4) == b"abcd"


async def test_a_stream_past_the_limit_stops_at_the_chunk_that_crosses_it() -> None:
    body = _Chunks(b"abc", b"def", b"ghi")
    with pytest.raises(BodyTooLarge, match="JWKS larger than 4 bytes"):
        await read_body(body, 4, "JWKS")
    assert body.reads == 2  # the third chunk is never read


async def test_buffered_bytes_are_returned_as_they_are() -> None:
    assert await read_body(b"whole", 1) == b"whole"


def test_new_request_is_the_same_frozen_request_as_the_constructor() -> None:
    context = RequestContext(direction="inbound")
    fields = ("POST", "/a?b=1", (("host", "app"),), b"body", "app:80", "https", "2", context)
    fast = new_request(*fields)
    assert fast == Request(*fields)
    assert fast.context is context
    assert fast.path == "/a" and fast.replayable
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.method = "GET"  # type: ignore[misc]
    rewritten = fast.with_headers((("x", "1"),))
    assert rewritten == dataclasses.replace(fast, headers=(("x", "1"),))
    assert rewritten.context is context


def test_new_response_validates_like_the_constructor() -> None:
    trailers = Trailers()
    fast = new_response(204, (("a", "b"),), b"", "No Content", trailers)
    assert fast == Response(204, (("a", "b"),), b"", "No Content", trailers)
    assert new_response(200, (), b"x") == Response(200, (), b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.status = 200  # type: ignore[misc]
    for status in (99, 1000):
        with pytest.raises(ValueError, match="3-digit"):
            new_response(status, (), b"")
        with pytest.raises(ValueError, match="3-digit"):
            Response(status)


def test_new_context_is_the_constructors_context_with_fresh_containers() -> None:
    # Every field set (a field added to RequestContext but not to new_context would be unset
    # when compiled: comparing all fields raises), mutable defaults not shared.
    args = ("inbound", "req-1", "10.0.0.1:5000", "spiffe://td/ns/a/sa/b", "10.0.0.9:80")
    fast, other = new_context(*args), new_context(*args)
    assert fast == RequestContext(
        direction="inbound",
        request_id="req-1",
        downstream_addr="10.0.0.1:5000",
        peer_identity="spiffe://td/ns/a/sa/b",
        original_dst="10.0.0.9:80",
    )
    for item in dataclasses.fields(RequestContext):
        assert getattr(fast, item.name) == getattr(RequestContext(), item.name) or item.name in (
            "direction",
            "request_id",
            "downstream_addr",
            "peer_identity",
            "original_dst",
        )
    assert fast.attributes is not other.attributes and fast.claims is not other.claims
    assert fast.previous_endpoints is not other.previous_endpoints


def test_header_name_is_latin1_lower_case_and_its_cache_bounded() -> None:
    from sidecar import http

    assert header_name(b"Content-Length") == "content-length"
    assert header_name(b"Content-Length") == "content-length"  # (cached)
    assert header_name(b"X-\xc9t\xe9") == "x-\xe9t\xe9"  # latin-1, lowered like str.lower
    for n in range(600):
        assert header_name(f"X-Many-{n}".encode()) == f"x-many-{n}"
    assert len(http._HEADER_NAMES) <= 256


def test_endpoint_address_is_built_once_and_stays_out_of_eq_hash_and_repr() -> None:
    a = Endpoint("10.0.0.1", 8080, service="orders")
    assert a.address == "10.0.0.1:8080"
    assert dataclasses.replace(a, port=9090).address == "10.0.0.1:9090"
    assert a == Endpoint("10.0.0.1", 8080, service="orders")
    assert hash(a) == hash(Endpoint("10.0.0.1", 8080, service="orders"))
    assert "address" not in repr(a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.address = "elsewhere:1"  # type: ignore[misc]
