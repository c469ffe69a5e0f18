"""Trace query values (search, spans, summaries) and the parsers both APIs share.

Times are ns since the epoch, durations ns, as in `otel_traces`; the HTTP layers convert units.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

__all__ = [
    "ATTRIBUTE_OPS",
    "AttributeFilter",
    "Cursor",
    "EventRecord",
    "InvalidQuery",
    "LinkRecord",
    "SearchPage",
    "SpanRecord",
    "TraceQuery",
    "TraceSummary",
    "normalize_trace_id",
    "parse_attribute_filter",
    "parse_go_duration",
]

AttributeOp = Literal["=", "!=", "=~", "!~"]
ATTRIBUTE_OPS: tuple[AttributeOp, ...] = ("=", "!=", "=~", "!~")
MAX_LIMIT = 1000
STATUSES = ("Unset", "Ok", "Error")
KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")


class InvalidQuery(ValueError):
    """A query parameter is malformed; the message says which and why (HTTP 422 / 400)."""


@dataclass(frozen=True, slots=True)
class AttributeFilter:
    """`SpanAttributes[key] <op> value`; with `resource=True` resource attributes match too."""

    key: str
    op: AttributeOp
    value: str
    resource: bool = False

    def __post_init__(self) -> None:
        if not self.key:
            raise InvalidQuery("attribute filter key must not be empty")
        if self.op not in ATTRIBUTE_OPS:
            raise InvalidQuery(f"attribute operator {self.op!r} must be one of {ATTRIBUTE_OPS}")


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the previous page ended: the last trace's sort time and id (pages go back in time)."""

    match_ns: int
    trace_id: str

    def encode(self) -> str:
        raw = f"{self.match_ns}:{self.trace_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            stamp, _, trace_id = raw.partition(":")
            cursor = cls(int(stamp), trace_id)
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidQuery("cursor is not one this API returned") from exc
        if not re.fullmatch(r"[0-9a-f]{32}", trace_id):
            raise InvalidQuery("cursor is not one this API returned")
        return cursor


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """A trace search: span-level filters select traces, trace-level bounds filter them."""

    start_ns: int
    end_ns: int
    service: str | None = None
    operation: str | None = None
    span_kind: str | None = None
    status: str | None = None
    min_span_duration_ns: int | None = None
    max_span_duration_ns: int | None = None
    min_trace_duration_ns: int | None = None
    max_trace_duration_ns: int | None = None
    attributes: tuple[AttributeFilter, ...] = ()
    limit: int = 20
    cursor: Cursor | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.end_ns <= self.start_ns:
            problems.append("end must be after start")
        if not 1 <= self.limit <= MAX_LIMIT:
            problems.append(f"limit must be 1..{MAX_LIMIT}, got {self.limit}")
        if self.status is not None and self.status not in STATUSES:
            problems.append(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.span_kind is not None and self.span_kind not in KINDS:
            problems.append(f"span kind must be one of {', '.join(KINDS)}, got {self.span_kind!r}")
        for what, low, high in (
            ("span", self.min_span_duration_ns, self.max_span_duration_ns),
            ("trace", self.min_trace_duration_ns, self.max_trace_duration_ns),
        ):
            if (low is not None and low < 0) or (high is not None and high < 0):
                problems.append(f"{what} durations must not be negative")
            if low is not None and high is not None and high < low:
                problems.append(f"max {what} duration must be >= min {what} duration")
        if problems:
            raise InvalidQuery("; ".join(problems))

    @property
    def has_trace_filter(self) -> bool:
        return self.min_trace_duration_ns is not None or self.max_trace_duration_ns is not None


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One search hit: the trace's extent (over its spans in the searched window) and its root."""

    trace_id: str
    match_ns: int
    start_ns: int
    end_ns: int
    span_count: int
    error_count: int
    root_service: str
    root_name: str
    services: tuple[str, ...]

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True, slots=True)
class SearchPage:
    traces: tuple[TraceSummary, ...]
    next_cursor: Cursor | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    time_ns: int
    name: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LinkRecord:
    trace_id: str
    span_id: str
    trace_state: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One otel_traces row."""

    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    name: str
    kind: str
    service: str
    resource: Mapping[str, str]
    scope_name: str
    scope_version: str
    attributes: Mapping[str, str]
    start_ns: int
    duration_ns: int
    status_code: str
    status_message: str
    events: tuple[EventRecord, ...] = ()
    links: tuple[LinkRecord, ...] = ()


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_go_duration(text: str) -> int:
    """A Go `time.ParseDuration` string (`1.5s`, `100ms`, `1h2m`) as ns; negatives are refused."""
    raw = text.strip()
    if raw == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(raw):
        match = _DURATION_PART.match(raw, pos)
        if match is None:
            raise InvalidQuery(f"{text!r} is not a duration like 100ms, 1.5s or 1h2m")
        total += float(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    if not raw:
        raise InvalidQuery("duration must not be empty")
    return round(total)


def parse_attribute_filter(text: str) -> AttributeFilter:
    """`key=value`, `key!=value`, `key=~regex` or `key!~regex` (the first operator splits)."""
    match = re.search(r"!=|=~|!~|=", text)
    if match is None or match.start() == 0:
        raise InvalidQuery(
            f"attribute filter {text!r} must be key=value, key!=value, key=~re or key!~re"
        )
    op = cast(AttributeOp, match.group(0))
    return AttributeFilter(key=text[: match.start()], op=op, value=text[match.end() :])


def normalize_trace_id(text: str) -> str:
    """A hex trace id (1..32 digits, any case) as the 32 lower-case digits otel_traces stores."""
    raw = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{1,32}", raw):
        raise InvalidQuery(f"trace id {text!r} must be 1 to 32 hex digits")
    return raw.rjust(32, "0")
