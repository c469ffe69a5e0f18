"""The span buffer is bounded, drops with a counted reason, and signals full batches."""

from __future__ import annotations

from sidecar.telemetry.spans import KIND_CLIENT, SpanBuffer, SpanRecord


def _span(i: int) -> SpanRecord:
    return SpanRecord(b"\x01" * 16, i.to_bytes(8, "big"), b"", "GET", KIND_CLIENT, 0, 1, 1, 0, {})


def test_buffer_drops_newest_when_full_and_counts_reason() -> None:
    drops: list[tuple[str, int]] = []
    ready: list[int] = []
    buffer = SpanBuffer(
        3, 2, on_drop=lambda r, n: drops.append((r, n)), on_batch_ready=lambda: ready.append(1)
    )
    for i in range(1, 6):
        buffer.add(_span(i))
    assert len(buffer) == 3
    assert drops == [("queue_full", 1), ("queue_full", 1)]
    assert ready == [1]  # exactly once, when the buffer reached batch_size
    taken = buffer.take(2)
    assert [int.from_bytes(s.span_id, "big") for s in taken] == [1, 2]
    assert len(buffer) == 1
    assert buffer.take(10)[0].span_id == (3).to_bytes(8, "big")
