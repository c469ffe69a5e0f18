"""Trace context propagation: W3C traceparent/tracestate (strict) and B3 (single and multi) input.

The sidecar reads either format from incoming headers and always writes W3C `traceparent`; trace
flags are carried unchanged (only bit 0x01, sampled, is interpreted).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sidecar.http import FAST_TRACEPARENT, Headers

__all__ = [
    "B3_HEADERS",
    "SAMPLED",
    "TRACE_HEADERS",
    "IdSource",
    "TraceContext",
    "extract",
    "format_b3_headers",
    "format_traceparent",
    "parse_b3_multi",
    "parse_b3_single",
    "parse_traceparent",
]

SAMPLED: Final = 0x01
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_HEX: Final = frozenset("0123456789abcdef")
_ZERO_TRACE: Final = bytes(16)
_ZERO_SPAN: Final = bytes(8)
B3_HEADERS: Final = frozenset(
    ("b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")
)
# Every header the sidecar rewrites when it forwards a request with its own span as parent.
TRACE_HEADERS: Final = B3_HEADERS | {"traceparent", "tracestate"}


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A remote parent: 16-byte trace id, 8-byte span id, W3C flags, opaque tracestate."""

    trace_id: bytes
    span_id: bytes
    flags: int = SAMPLED
    tracestate: str = ""
    b3: bool = False  # came in as B3 (so B3 is also written on the way out)

    def __post_init__(self) -> None:
        if len(self.trace_id) != 16 or self.trace_id == _ZERO_TRACE:
            raise ValueError("trace_id must be 16 bytes, not all zero")
        if len(self.span_id) != 8 or self.span_id == _ZERO_SPAN:
            raise ValueError("span_id must be 8 bytes, not all zero")
        if not 0 <= self.flags <= 0xFF:
            raise ValueError(f"flags must fit in one byte, got {self.flags}")

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)


def _is_hex(text: str, size: int) -> bool:
    return len(text) == size and _HEX.issuperset(text)


def parse_traceparent(value: str, tracestate: str = "") -> TraceContext | None:
    """Parse a W3C `traceparent`; None when invalid (the caller then starts a new trace)."""
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, extra = match.groups()
    # Version ff is forbidden; version 00 has exactly four fields (later ones may add more).
    if version == "ff" or (version == "00" and extra):
        return None
    trace_id = bytes.fromhex(trace_hex)
    span_id = bytes.fromhex(span_hex)
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, int(flags_hex, 16), tracestate)


_FLAGS_HEX: Final[tuple[str, ...]] = tuple(f"{flags:02x}" for flags in range(256))


def format_traceparent(trace_id: bytes, span_id: bytes, flags: int) -> str:
    """Render a version-00 `traceparent`."""
    # Runs once per request and attempt: in C when compiled (one string written), else the
    # same in Python; flags beyond a byte (only a caller's bug) are formatted in Python too.
    if _FAST_TRACEPARENT is not None and 0 <= flags < 256:
        return _FAST_TRACEPARENT(trace_id, span_id, flags)
    return _format_traceparent(trace_id, span_id, flags)


def _format_traceparent(trace_id: bytes, span_id: bytes, flags: int) -> str:
    text = _FLAGS_HEX[flags] if 0 <= flags < 256 else f"{flags:02x}"
    return f"00-{_hex(trace_id)}-{_hex(span_id)}-{text}"


_FAST_TRACEPARENT: Final = FAST_TRACEPARENT  # (a C static when compiled)


_hex: Final = bytes.hex  # (called, not looked up as a method per id)


def _b3_trace_id(text: str) -> bytes | None:
    # 64-bit B3 trace ids are left-padded with zeros to 128 bits (as the B3 spec says).
    if _is_hex(text, 16):
        text = "0" * 16 + text
    if not _is_hex(text, 32):
        return None
    trace_id = bytes.fromhex(text)
    return None if trace_id == _ZERO_TRACE else trace_id


def _b3_span_id(text: str) -> bytes | None:
    if not _is_hex(text, 16):
        return None
    span_id = bytes.fromhex(text)
    return None if span_id == _ZERO_SPAN else span_id


def _b3_flags(sampling: str | None, debug: bool) -> int | None:
    if debug or sampling in ("1", "d", "true"):
        return SAMPLED
    if sampling in ("0", "false"):
        return 0
    if sampling is None or sampling == "":
        return SAMPLED  # "defer": we are the first sampler on this path and record it
    return None


def parse_b3_single(value: str) -> TraceContext | None:
    """Parse `b3: {trace}-{span}[-{sampling}[-{parent}]]`; deny-only `b3: 0` and junk give None."""
    parts = value.strip().lower().split("-")
    if len(parts) < 2 or len(parts) > 4:
        return None
    trace_id, span_id = _b3_trace_id(parts[0]), _b3_span_id(parts[1])
    sampling = parts[2] if len(parts) > 2 else None
    flags = _b3_flags(sampling, debug=sampling == "d")
    if trace_id is None or span_id is None or flags is None:
        return None
    if len(parts) == 4 and _b3_span_id(parts[3]) is None:
        return None
    return TraceContext(trace_id, span_id, flags, b3=True)


def parse_b3_multi(
    trace: str, span: str, sampled: str | None, debug: str | None
) -> TraceContext | None:
    """Parse the `x-b3-*` headers (first value of each); None when malformed."""
    trace_id, span_id = _b3_trace_id(trace.strip().lower()), _b3_span_id(span.strip().lower())
    flags = _b3_flags(None if sampled is None else sampled.strip().lower(), debug == "1")
    if trace_id is None or span_id is None or flags is None:
        return None
    return TraceContext(trace_id, span_id, flags, b3=True)


def extract(headers: Headers) -> TraceContext | None:
    """The caller's trace context: W3C first, then single `b3`, then `x-b3-*`; None if absent/bad.

    Once a `traceparent` header is present, its validity alone decides (no fallback to B3), as
    W3C says a receiver must restart the trace when traceparent is invalid.
    """
    for name, _ in headers:
        if name in TRACE_HEADERS:
            break
    else:  # no trace headers (a request the app did not trace): nothing built
        return None
    traceparent: str | None = None
    tracestate: list[str] = []
    b3: dict[str, str] = {}
    for name, value in headers:
        if name == "traceparent":
            if traceparent is None:
                traceparent = value
            else:
                return None  # two traceparent fields: ambiguous, so invalid
        elif name == "tracestate":
            tracestate.append(value)
        elif name in B3_HEADERS and name not in b3:
            b3[name] = value
    if traceparent is not None:
        return parse_traceparent(traceparent, ",".join(tracestate))
    if "b3" in b3:
        return parse_b3_single(b3["b3"])
    if "x-b3-traceid" in b3 and "x-b3-spanid" in b3:
        return parse_b3_multi(
            b3["x-b3-traceid"], b3["x-b3-spanid"], b3.get("x-b3-sampled"), b3.get("x-b3-flags")
        )
    return None


def format_b3_headers(trace_id: bytes, span_id: bytes, flags: int) -> Headers:
    """B3 multi headers for a request whose parent is `span_id`."""
    return (
        ("x-b3-traceid", trace_id.hex()),
        ("x-b3-spanid", span_id.hex()),
        ("x-b3-sampled", "1" if flags & SAMPLED else "0"),
    )


class IdSource:
    """Random trace and span ids (W3C: random; they need uniqueness, not secrecy).

    The ids are cut from a buffer of 512 random bytes refilled at once (one os.urandom call per
    32 trace ids or 64 span ids instead of one each; a PRNG seeded with `seed` instead, for
    tests); all-zero ids are skipped.
    """

    __slots__ = ("_buf", "_fill", "_pos")

    def __init__(self, seed: int | None = None) -> None:
        self._fill: Callable[[int], bytes] = (
            os.urandom if seed is None else random.Random(seed).randbytes
        )
        self._buf = b""
        self._pos = 0

    def _take(self, size: int) -> bytes:
        pos = self._pos
        buf = self._buf
        if pos + size > len(buf):
            buf = self._buf = self._fill(_ID_BUFFER)
            pos = 0
        self._pos = pos + size
        return buf[pos : pos + size]

    def trace_id(self) -> bytes:
        while True:
            value = self._take(16)
            if value != _ZERO_TRACE:
                return value

    def span_id(self) -> bytes:
        while True:
            value = self._take(8)
            if value != _ZERO_SPAN:
                return value


_ID_BUFFER: Final = 512  # bytes
