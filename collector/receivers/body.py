"""Request body handling shared by the OTLP receivers: content types and bounded decompression."""

from __future__ import annotations

import zlib

from collector.otlp.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["JSON", "PROTOBUF", "inflate", "media_type"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf", "application/vnd.google.protobuf"})
# zlib wbits: 16+15 = gzip only, 15 = zlib-wrapped deflate, -15 = raw deflate.
_GZIP_WBITS = 31
_ZLIB_WBITS = 15
_RAW_WBITS = -15


def media_type(content_type: str) -> str:
    """PROTOBUF or JSON for a Content-Type header value; UnsupportedMediaType otherwise."""
    base = content_type.split(";", 1)[0].strip().lower()
    if base in _PROTOBUF_TYPES:
        return PROTOBUF
    if base == JSON:
        return JSON
    raise UnsupportedMediaType(
        f"unsupported Content-Type {base or '(none)'!r}; use {PROTOBUF} or {JSON}"
    )


def inflate(body: bytes, encoding: str, limit_bytes: int) -> bytes:
    """Decode Content-Encoding, never producing more than `limit_bytes` (gzip bombs stop early)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return _bounded(body, _GZIP_WBITS, limit_bytes, "gzip")
    if encoding == "deflate":
        # RFC 9110 says zlib-wrapped; some clients send raw deflate, so fall back to it.
        try:
            return _bounded(body, _ZLIB_WBITS, limit_bytes, "deflate")
        except InvalidRequest:
            return _bounded(body, _RAW_WBITS, limit_bytes, "deflate")
    raise UnsupportedMediaType(
        f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none"
    )


def _bounded(body: bytes, wbits: int, limit_bytes: int, name: str) -> bytes:
    out = bytearray()
    data = body
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            chunk = inflater.decompress(data, limit_bytes + 1 - len(out))
        except zlib.error as exc:
            raise InvalidRequest(f"malformed {name} body: {exc}") from exc
        out += chunk
        if len(out) > limit_bytes or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit_bytes} bytes")
        if not inflater.eof:
            raise InvalidRequest(f"malformed {name} body: truncated stream")
        data = inflater.unused_data
        # gzip allows concatenated members; anything else after the stream is an error.
        if not data or wbits != _GZIP_WBITS:
            if data:
                raise InvalidRequest(f"malformed {name} body: trailing bytes after the stream")
            return bytes(out)
