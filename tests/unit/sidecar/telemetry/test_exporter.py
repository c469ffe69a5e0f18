"""The export loop: batches, drops counted by reason, retries, shutdown with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from sidecar.telemetry.exporter import ExportCounters, ExporterConfig, OtlpExporter
from sidecar.telemetry.metrics import Registry
from sidecar.telemetry.otlp import TraceEncoder
from sidecar.telemetry.spans import KIND_CLIENT, SpanBuffer, SpanRecord
from sidecar.telemetry.transport import RetryPolicy, TransportResult


class ScriptedTransport:
    """The collector edge; `block` makes a POST wait until released."""

    def __init__(self, script: Sequence[TransportResult]) -> None:
        self.script = list(script)
        self.bodies: list[bytes] = []
        self.block: asyncio.Event | None = None
        self.closed = False

    async def post(self, path: str, body: bytes) -> TransportResult:
        if self.block is not None:
            await self.block.wait()
        if path == "/v1/traces":
            self.bodies.append(body)
        return self.script.pop(0) if self.script else TransportResult(200)

    async def close(self) -> None:
        self.closed = True


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _span(i: int) -> SpanRecord:
    return SpanRecord(
        b"\x01" * 16, i.to_bytes(8, "big"), b"", "GET", KIND_CLIENT, 1, 2, 1, 0, {"i": i}
    )


def build(
    transport: ScriptedTransport, *, max_spans: int = 100, batch: int = 10, interval: float = 1.0
) -> tuple[OtlpExporter, SpanBuffer, ExportCounters, FakeTime]:
    registry = Registry()
    counters = ExportCounters(
        registry.counter("exported", "e"),
        registry.counter("dropped", "d", ("reason",)),
        registry.counter("requests", "r", ("signal", "result")),
    )
    buffer = SpanBuffer(max_spans, batch, on_drop=lambda r, n: counters.dropped.inc((r,), n))
    fake = FakeTime()
    exporter = OtlpExporter(
        transport=transport,
        buffer=buffer,
        encoder=TraceEncoder((("service.name", "svc"),)),
        counters=counters,
        config=ExporterConfig(
            interval_s=interval, batch_size=batch, retry=RetryPolicy(max_attempts=3)
        ),
        clock=fake.clock,
        sleep=fake.sleep,
        rand=lambda: 1.0,
    )
    return exporter, buffer, counters, fake


def _span_count(body: bytes) -> int:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


async def test_full_queue_drops_with_reason_and_the_rest_is_exported_in_batches() -> None:
    transport = ScriptedTransport([])
    exporter, buffer, counters, _ = build(transport, max_spans=25, batch=10)
    for i in range(1, 31):
        buffer.add(_span(i))
    await exporter.flush_spans()
    assert counters.dropped.value(("queue_full",)) == 5
    assert [_span_count(b) for b in transport.bodies] == [10, 10, 5]
    assert counters.exported.value() == 25
    assert counters.requests.value(("traces", "ok")) == 3


async def test_spans_recorded_during_a_post_wait_for_the_next_round() -> None:
    # Not a post of the few spans recorded meanwhile after every post, back to back: they wait
    # for a full batch or the interval (OTel's batch processor); shutdown still sends them.
    transport = ScriptedTransport([])
    exporter, buffer, counters, _ = build(transport, batch=10)
    for i in range(1, 13):
        buffer.add(_span(i))
    transport.block = asyncio.Event()
    flushing = asyncio.get_running_loop().create_task(exporter.flush_spans())
    await asyncio.sleep(0)  # the first post is in flight
    for i in range(13, 16):
        buffer.add(_span(i))
    transport.block.set()
    await flushing
    assert [_span_count(b) for b in transport.bodies] == [10, 2]
    assert len(buffer) == 3
    await exporter.shutdown(deadline_s=5)
    assert [_span_count(b) for b in transport.bodies] == [10, 2, 3]
    assert counters.exported.value() == 15 and len(buffer) == 0


class LoadedTransport(ScriptedTransport):
    """Spans keep coming while it posts: `per_post` more during each of the first posts."""

    def __init__(self, buffer: list[SpanBuffer], per_post: int, posts: int) -> None:
        super().__init__([])
        self.buffer, self.per_post, self.posts = buffer, per_post, posts

    async def post(self, path: str, body: bytes) -> TransportResult:
        if self.posts > 0:
            self.posts -= 1
            for i in range(self.per_post):
                self.buffer[0].add(_span(1000 + i))
        return await super().post(path, body)


async def test_a_full_batch_left_after_a_round_goes_out_without_waiting_for_the_interval() -> None:
    # Under load more than a batch can arrive while a round posts, without the buffer ever
    # growing through exactly one batch (the early wake-up): it must not sit for the interval
    # (spans would pile up to the queue bound and be dropped) but go out at once.
    holder: list[SpanBuffer] = []
    transport = LoadedTransport(holder, per_post=20, posts=1)
    exporter, buffer, counters, _ = build(transport, batch=10, interval=30.0)
    holder.append(buffer)
    for i in range(25):
        buffer.add(_span(i))
    exporter.start()
    exporter.wake()
    for _ in range(200):  # bounded: up to 2 s, the interval is 30 s
        if counters.exported.value() == 45:
            break
        await asyncio.sleep(0.01)
    assert counters.exported.value() == 45 and len(buffer) == 0
    assert [_span_count(b) for b in transport.bodies] == [10, 10, 5, 10, 10]
    await exporter.shutdown(deadline_s=5)


async def test_503_is_retried_then_succeeds() -> None:
    transport = ScriptedTransport([TransportResult(503), TransportResult(200)])
    exporter, buffer, counters, fake = build(transport)
    buffer.add(_span(1))
    await exporter.flush_spans()
    assert counters.exported.value() == 1
    assert counters.requests.value(("traces", "retry")) == 1
    assert len(transport.bodies) == 2 and transport.bodies[0] == transport.bodies[1]
    assert fake.slept == [0.5]  # full jitter with rand=1.0: the whole first backoff window


async def test_rejected_and_failed_batches_are_counted_as_dropped() -> None:
    transport = ScriptedTransport([TransportResult(400)] + [TransportResult(503)] * 3)
    exporter, buffer, counters, _ = build(transport, batch=2)
    for i in range(4):
        buffer.add(_span(i + 1))
    await exporter.flush_spans()
    assert counters.dropped.value(("export_rejected",)) == 2
    assert counters.dropped.value(("export_failed",)) == 2
    assert counters.exported.value() == 0


async def test_partial_success_counts_rejected_spans() -> None:
    answer = ExportTraceServiceResponse()
    answer.partial_success.rejected_spans = 1
    transport = ScriptedTransport([TransportResult(200, body=answer.SerializeToString())])
    exporter, buffer, counters, _ = build(transport)
    buffer.add(_span(1))
    buffer.add(_span(2))
    await exporter.flush_spans()
    assert counters.exported.value() == 1
    assert counters.dropped.value(("partial_rejected",)) == 1


async def test_shutdown_exports_what_is_left() -> None:
    transport = ScriptedTransport([])
    exporter, buffer, counters, _ = build(transport)
    exporter.start()
    buffer.add(_span(1))
    await exporter.shutdown(deadline_s=5)
    assert counters.exported.value() == 1 and transport.closed


async def test_shutdown_gives_up_at_the_deadline_and_counts_the_loss() -> None:
    transport = ScriptedTransport([])
    transport.block = asyncio.Event()  # the collector never answers
    exporter, buffer, counters, _ = build(transport, batch=3)
    for i in range(5):
        buffer.add(_span(i + 1))
    await exporter.shutdown(deadline_s=0.05)
    # the in-flight batch and the queued rest are both counted
    assert counters.dropped.value(("shutdown",)) == 5
    assert counters.exported.value() == 0 and transport.closed


async def test_loop_exports_when_a_batch_fills_up() -> None:
    transport = ScriptedTransport([])
    registry = Registry()
    counters = ExportCounters(
        registry.counter("exported", "e"),
        registry.counter("dropped", "d", ("reason",)),
        registry.counter("requests", "r", ("signal", "result")),
    )
    exporter: OtlpExporter | None = None

    def ready() -> None:
        assert exporter is not None
        exporter.wake()

    buffer = SpanBuffer(100, 3, on_drop=lambda r, n: None, on_batch_ready=ready)
    # a long interval: only the full-batch wake-up can make it export within the test
    exporter = OtlpExporter(
        transport=transport,
        buffer=buffer,
        encoder=TraceEncoder(()),
        counters=counters,
        config=ExporterConfig(interval_s=3600, batch_size=3),
    )
    exporter.start()
    for i in range(3):
        buffer.add(_span(i + 1))
    for _ in range(100):
        if counters.exported.value() == 3:
            break
        await asyncio.sleep(0.001)
    assert counters.exported.value() == 3
    await exporter.shutdown(deadline_s=1)
