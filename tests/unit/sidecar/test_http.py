"""sidecar/http.py: the bounded whole-body read, and the fast Request/Response constructors."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sidecar.errors import BodyTooLarge
from sidecar.http import (
    DeadlineQueue,
    DeadlineTimer,
    Endpoint,
    Request,
    RequestContext,
    Response,
    Trailers,
    header_name,
    new_context,
    new_request,
    new_response,
    parse_digits,
    read_body,
)
from tests.fakes import count_loop_timers


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


def test_request_init_takes_the_fields_in_order_with_their_defaults() -> None:
    # Request's __init__ is written out (native when compiled): it must stay the dataclass's
    # (a field added, reordered or given another default without it fails here)
    fields = dataclasses.fields(Request)
    context = RequestContext(direction="inbound")
    values = ("PUT", "/t?q", (("h", "v"),), b"x", "a:1", "https", "2", context)
    assert len(values) == len(fields)
    positional = Request(*values)
    assert [getattr(positional, spec.name) for spec in fields] == list(values)
    assert positional.context is context
    keywords: dict[str, Any] = {spec.name: v for spec, v in zip(fields, values, strict=True)}
    named = Request(**keywords)
    assert named == positional and named.context is context
    plain, other = Request("GET"), Request("GET")
    for spec in fields[1:]:
        factory: Any = spec.default_factory
        default = spec.default if spec.default is not dataclasses.MISSING else factory()
        assert getattr(plain, spec.name) == default, spec.name
    assert plain.context is not other.context  # a new context per request
    assert dataclasses.replace(positional, target="/") == Request(
        "PUT", "/", (("h", "v"),), b"x", "a:1", "https", "2", context
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        named.body = b"y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Request()  # type: ignore[call-arg]


def test_response_init_takes_the_fields_in_order_with_their_defaults() -> None:
    # Response's __init__ is written out (native when compiled): it must stay the dataclass's
    fields = dataclasses.fields(Response)
    trailers = Trailers()
    values: tuple[Any, ...] = (201, (("h", "v"),), b"x", "Created", trailers)
    assert len(values) == len(fields)
    positional = Response(*values)
    assert [getattr(positional, spec.name) for spec in fields] == list(values)
    keywords: dict[str, Any] = {spec.name: v for spec, v in zip(fields, values, strict=True)}
    assert Response(**keywords) == positional
    plain = Response(200)
    for spec in fields[1:]:
        assert getattr(plain, spec.name) == spec.default, spec.name
    assert dataclasses.replace(positional, status=202).status == 202
    with pytest.raises(ValueError, match="3-digit"):
        dataclasses.replace(positional, status=42)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.reason = "x"  # type: ignore[misc]


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


def test_request_context_init_takes_the_fields_in_order_with_their_defaults() -> None:
    # RequestContext's __init__ is written out (native when compiled): it must stay the
    # dataclass's (a field added, reordered or given another default without it fails here)
    fields = [spec for spec in dataclasses.fields(RequestContext) if spec.init]
    endpoint = Endpoint("10.0.0.1", 80)
    values: tuple[Any, ...] = (
        "inbound", "id", "1.2.3.4:5", "spiffe://p", "sub", {"c": 1}, "5.6.7.8:9", "cap",
        "r", "u", endpoint, 3, [endpoint], 12.5, None, 1.5, 2.5, b"t" * 16, b"s" * 8, 0,
        "k=v", {"a": 1},
    )  # fmt: skip
    assert len(values) == len(fields)
    positional = RequestContext(*values)
    assert [getattr(positional, spec.name) for spec in fields] == list(values)
    assert positional.claims is values[5] and positional.attributes is values[-1]
    keywords: dict[str, Any] = {spec.name: v for spec, v in zip(fields, values, strict=True)}
    assert RequestContext(**keywords) == positional
    plain, other = RequestContext(), RequestContext()
    for spec in fields:
        factory: Any = spec.default_factory
        default = spec.default if spec.default is not dataclasses.MISSING else factory()
        assert getattr(plain, spec.name) == default, spec.name
    # containers fresh per context
    assert plain.claims is not other.claims and plain.attributes is not other.attributes
    assert plain.previous_endpoints is not other.previous_endpoints
    assert dataclasses.replace(positional, route="r2").route == "r2"
    # set by the codec and a fused route only (a response written as it arrives), never copied
    assert [spec.name for spec in dataclasses.fields(RequestContext) if not spec.init] == [
        "write_final",
        "final",
    ]
    positional.write_final, positional.final = print, bool
    copy = dataclasses.replace(positional)
    assert plain.write_final is None and plain.final is None
    assert copy.write_final is None and copy.final is None and copy == positional


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


# -- DeadlineQueue: request deadline timers sharing one loop timer -------------------------------


async def _idle_tasks(n: int) -> list[asyncio.Task[None]]:
    tasks = [asyncio.get_running_loop().create_task(asyncio.sleep(30)) for _ in range(n)]
    await asyncio.sleep(0)  # started: a cancel now ends them with CancelledError
    return tasks


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_deadlines_in_increasing_order_share_one_loop_timer_and_fire_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks = await _idle_tasks(4)
    delays = count_loop_timers(monkeypatch)
    queue = DeadlineQueue()
    fired: list[int] = []
    timers = [DeadlineTimer(t, 0.0, queue) for t in tasks]

    def recorder(n: int) -> Callable[[], bool]:
        def expire() -> bool:
            fired.append(n)
            return False  # not a header wait: the timer goes on to cancel its task

        return expire

    for n, timer in enumerate(timers):
        timer.expire = recorder(n)
        timer.arm(0.01 + n * 0.005)
    timers[2].cancel()
    assert delays == [0.01] and len(queue) == 3
    for _ in range(100):  # bounded: up to 1 s
        if len(fired) == 3 and all(t.done() for t in (tasks[0], tasks[1], tasks[3])):
            break
        await asyncio.sleep(0.01)
    assert fired == [0, 1, 3]  # the cancelled one never fires
    assert [t.fired for t in timers] == [True, True, False, True]
    assert [t.cancelled() for t in tasks] == [True, True, False, True]
    assert len(queue) == 0
    await _finish(tasks)


async def test_an_earlier_deadline_rearms_the_loop_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = await _idle_tasks(2)
    delays = count_loop_timers(monkeypatch)
    queue = DeadlineQueue()
    late = DeadlineTimer(tasks[0], 0.0, queue)
    early = DeadlineTimer(tasks[1], 0.0, queue)
    late.arm(30.0)
    early.arm(0.01)
    assert delays == [30.0, 0.01]
    for _ in range(100):
        if tasks[1].done():
            break
        await asyncio.sleep(0.01)
    assert early.fired and tasks[1].cancelled()
    assert not late.fired and not tasks[0].done()
    late.cancel()
    assert len(queue) == 0
    await _finish(tasks)


async def test_current_task_is_the_running_one_in_and_out_of_the_queues_loop() -> None:
    queue = DeadlineQueue()
    assert queue.current_task() is asyncio.current_task()  # no loop yet: asyncio's answer
    (idle,) = await _idle_tasks(1)
    timer = DeadlineTimer(idle, 0.0, queue)
    timer.arm(30.0)  # the queue takes this loop

    async def inner() -> asyncio.Task[Any] | None:
        return queue.current_task()

    child = asyncio.get_running_loop().create_task(inner())
    assert await child is child  # each task sees itself, not the one that armed a timer
    assert queue.current_task() is asyncio.current_task()
    timer.cancel()
    await _finish([idle])

    # Another thread, running a loop of its own, while this loop is mid-step (this task blocks
    # in join below): the queue's loop has a current task then, which is not the thread's.
    # (It ran in an executor before and passed or failed with whatever this loop was doing.)
    timer = DeadlineTimer(asyncio.current_task(), 0.0, queue)  # type: ignore[arg-type]
    timer.arm(30.0)
    seen: list[bool] = []

    def in_another_loop() -> None:
        async def probe() -> bool:
            return queue.current_task() is asyncio.current_task() is not None

        seen.append(asyncio.run(probe()))

    thread = threading.Thread(target=in_another_loop)
    thread.start()
    thread.join(10)
    timer.cancel()
    assert seen == [True]


async def test_cancelled_entries_are_dropped_so_the_heap_stays_bounded() -> None:
    (task,) = await _idle_tasks(1)
    queue = DeadlineQueue()
    keep = DeadlineTimer(task, 0.0, queue)
    keep.arm(60.0)  # one live entry: the heap is never simply emptied
    for _ in range(1000):
        timer = DeadlineTimer(task, 0.0, queue)
        timer.arm(30.0)
        timer.cancel()
    assert len(queue) == 1
    assert len(queue._heap) <= 2 * 65 + 1
    keep.cancel()
    assert len(queue) == 0
    await _finish([task])


async def test_a_timer_of_another_loop_arms_its_own_loop_timer() -> None:
    (task,) = await _idle_tasks(1)
    queue = DeadlineQueue()
    mine = DeadlineTimer(task, 0.0, queue)
    mine.arm(30.0)

    def other_loop() -> tuple[bool, bool]:
        async def arm() -> tuple[bool, bool]:
            current = asyncio.current_task()
            assert current is not None
            timer = DeadlineTimer(current, 0.0, queue)
            timer.arm(30.0)
            own = timer.handle is not None and timer.entry == 0
            timer.cancel()
            return own, timer.handle is not None and timer.handle.cancelled()

        return asyncio.run(arm())

    assert await asyncio.to_thread(other_loop) == (True, True)
    assert len(queue) == 1
    mine.cancel()
    await _finish([task])


def test_parse_digits_takes_ascii_digits_only_and_bounds_their_count() -> None:
    assert parse_digits("0") == 0 and parse_digits("250") == 250
    assert parse_digits("9" * 15) == 10**15 - 1
    # str.isdigit takes these, int() refuses them (or raises past 4,300 digits)
    for text in ("\u00b2", "1\u00b3", "\u0663", "9" * 16, "9" * 5000, "", " 1", "1 ", "-1", "+1"):
        assert parse_digits(text) is None, text
    assert parse_digits("65535", 5) == 65535 and parse_digits("123456", 5) is None
