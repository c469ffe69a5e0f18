"""read_body: the bounded whole-body read shared by the control-plane and JWKS clients."""

from __future__ import annotations

import pytest

from sidecar.errors import BodyTooLarge
from sidecar.http import read_body


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
