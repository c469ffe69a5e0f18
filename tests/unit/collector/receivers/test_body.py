from __future__ import annotations

import gzip
import zlib

import pytest

from collector.otlp.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from collector.receivers.body import JSON, PROTOBUF, inflate, media_type


def test_media_types_accept_parameters_and_aliases() -> None:
    assert media_type("application/x-protobuf") == PROTOBUF
    assert media_type("application/protobuf") == PROTOBUF
    assert media_type("application/json; charset=utf-8") == JSON
    with pytest.raises(UnsupportedMediaType, match="text/plain"):
        media_type("text/plain")
    with pytest.raises(UnsupportedMediaType, match="none"):
        media_type("")


def test_gzip_and_both_deflate_forms_inflate() -> None:
    data = b"span" * 1000
    assert inflate(gzip.compress(data), "gzip", 1 << 20) == data
    assert inflate(zlib.compress(data), "deflate", 1 << 20) == data
    raw = zlib.compressobj(wbits=-15)
    assert inflate(raw.compress(data) + raw.flush(), "deflate", 1 << 20) == data
    assert inflate(data, "identity", 1 << 20) == data
    assert inflate(gzip.compress(b"a") + gzip.compress(b"b"), "gzip", 100) == b"ab"


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))
    with pytest.raises(PayloadTooLarge, match="decompressed body exceeds"):
        inflate(bomb, "gzip", 1024 * 1024)


def test_corrupt_truncated_and_unknown_encodings_are_errors() -> None:
    with pytest.raises(InvalidRequest, match="malformed gzip"):
        inflate(b"not gzip at all", "gzip", 1 << 20)
    with pytest.raises(InvalidRequest, match="truncated"):
        inflate(gzip.compress(b"x" * 1000)[:-12], "gzip", 1 << 20)
    with pytest.raises(UnsupportedMediaType, match="br"):
        inflate(b"", "br", 1 << 20)
