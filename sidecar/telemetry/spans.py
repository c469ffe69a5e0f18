"""Compact span records made on the request path and the bounded buffer they wait in for export.

A span is one immutable tuple (ids as bytes, times in unix ns, a small attribute dict); nothing
OTLP-shaped is built until the exporter encodes a whole batch off the request path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final, NamedTuple

from sidecar.http import AttrValue

__all__ = [
    "KIND_CLIENT",
    "KIND_SERVER",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_UNSET",
    "AttrTemplate",
    "SpanBuffer",
    "SpanRecord",
]

# Values of the OTLP enums (opentelemetry/proto/trace/v1/trace.proto).
KIND_SERVER: Final = 2
KIND_CLIENT: Final = 3
STATUS_UNSET: Final = 0
STATUS_OK: Final = 1
STATUS_ERROR: Final = 2


class AttrTemplate:
    """The attribute keys of spans of one shape, in order, with the values they all share.

    A span recorded with a template holds exactly these keys in this order, with these values
    except where the template has None (those vary per span). The encoder pre-encodes the
    shared ones once per template (`encoded`, its to fill) instead of comparing them per span.
    """

    __slots__ = ("encoded", "items", "last_encoded", "last_values")

    def __init__(self, items: tuple[tuple[str, AttrValue | None], ...]) -> None:
        self.items = items
        # (the encoder's: the shared attributes' bytes around the varying keys, and the
        # last value of each varying key with its encoding)
        self.encoded: tuple[tuple[bytes, ...], tuple[str, ...]] | None = None
        varying = sum(1 for _key, value in items if value is None)
        self.last_values: list[AttrValue | None] = [None] * varying
        self.last_encoded: list[bytes] = [b""] * varying

    def __eq__(self, other: object) -> bool:  # a value: its items (the rest is a cache)
        return isinstance(other, AttrTemplate) and self.items == other.items

    def __hash__(self) -> int:
        return hash(self.items)

    def __repr__(self) -> str:
        return f"AttrTemplate({self.items!r})"


class SpanRecord(NamedTuple):
    """One finished span (`template`: the shape of its attributes, or None)."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: int
    start_ns: int
    end_ns: int
    flags: int
    status: int
    attributes: dict[str, AttrValue]
    tracestate: str = ""
    status_message: str = ""
    template: AttrTemplate | None = None


class SpanBuffer:
    """Finished spans waiting for export; bounded, drops the newest when full and counts it.

    `on_batch_ready` is called once each time the buffer reaches `batch_size`, so the exporter
    can send early instead of waiting for its timer.
    """

    __slots__ = ("_append", "_batch_size", "_items", "_max_spans", "_on_drop", "_on_ready")

    def __init__(
        self,
        max_spans: int,
        batch_size: int,
        *,
        on_drop: Callable[[str, int], None],
        on_batch_ready: Callable[[], None] | None = None,
    ) -> None:
        if max_spans < 1 or batch_size < 1:
            raise ValueError("max_spans and batch_size must be >= 1")
        self._items: deque[SpanRecord] = deque()
        self._append = self._items.append  # (bound once: no method lookup per span)
        self._max_spans = max_spans
        self._batch_size = batch_size
        self._on_drop = on_drop
        self._on_ready = on_batch_ready

    def __len__(self) -> int:
        return len(self._items)

    def add(self, span: SpanRecord) -> None:
        """Queue `span`, or drop it (reason `queue_full`) when the buffer is at its bound."""
        items = self._items
        if len(items) >= self._max_spans:
            self._on_drop("queue_full", 1)
            return
        self._append(span)
        if len(items) == self._batch_size and self._on_ready is not None:
            self._on_ready()

    def take(self, limit: int) -> list[SpanRecord]:
        """Remove and return up to `limit` of the oldest spans."""
        items = self._items
        count = min(limit, len(items))
        return [items.popleft() for _ in range(count)]
