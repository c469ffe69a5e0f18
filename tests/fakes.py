"""Shared in-memory fakes for tests: a scripted upstream handler, a manual clock, a recording
sleep, in-memory body streams and a mutable endpoint source, and two helpers (a body read to its
end, the loop timers a test arms). No network, no real waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from sidecar.http import Body, Endpoint, Request, RequestContext, Response

__all__ = [
    "HANG",
    "Call",
    "ManualClock",
    "MemoryStream",
    "MutableEndpoints",
    "RecordingSleep",
    "ScriptedUpstream",
    "SequenceRandom",
    "body_bytes",
    "count_loop_timers",
    "make_request",
]


class _Hang:
    """Script item: the upstream never answers (until cancelled)."""


HANG = _Hang()
Item = int | Response | BaseException | _Hang


class ManualClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class RecordingSleep:
    """An injected sleep: records each duration and advances `clock` instead of waiting."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)
        await asyncio.sleep(0)


class SequenceRandom:
    """random() returning the given values in turn (cycling)."""

    def __init__(self, values: Sequence[float]) -> None:
        assert values and all(0.0 <= v < 1.0 for v in values)
        self._values = list(values)
        self._i = 0

    def __call__(self) -> float:
        value = self._values[self._i % len(self._values)]
        self._i += 1
        return value


class MemoryStream:
    """A one-shot BodyStream over chunks; `length` as the sender would declare it."""

    def __init__(self, chunks: Iterable[bytes], length: int | None = -1) -> None:
        self._chunks = list(chunks)
        self._length = sum(map(len, self._chunks)) if length == -1 else length
        self.reads = 0

    @property
    def length(self) -> int | None:
        return self._length

    async def read(self) -> bytes:
        self.reads += 1
        return self._chunks.pop(0) if self._chunks else b""


@dataclass
class Call:
    """What the upstream saw on one call."""

    method: str
    target: str
    body: bytes | None  # None when the body was a stream
    endpoint: Endpoint | None
    attempt: int
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class ScriptedUpstream:
    """A terminal handler answering from a script: a status, a Response, an exception to raise,
    or HANG. `by_endpoint` scripts per endpoint address; when a script runs out, `default`.
    With `clock`, each call advances it by `latency_s[address]` (simulated service time)."""

    statuses: list[Item] = field(default_factory=list)
    by_endpoint: Mapping[str, list[Item]] = field(default_factory=dict)
    default: Item = 200
    clock: ManualClock | None = None
    latency_s: Mapping[str, float] = field(default_factory=dict)
    seen: list[Call] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.seen)

    def addresses(self) -> list[str]:
        return [c.endpoint.address if c.endpoint else "" for c in self.seen]

    async def __call__(self, request: Request) -> Response:
        context = request.context
        endpoint = context.endpoint
        body = request.body if isinstance(request.body, bytes) else None
        self.seen.append(
            Call(request.method, request.target, body, endpoint, context.attempt, request.headers)
        )
        address = endpoint.address if endpoint is not None else ""
        script = self.by_endpoint.get(address, self.statuses)
        item = script.pop(0) if script else self.default
        if self.clock is not None:
            self.clock.advance(self.latency_s.get(address, 0.0))
        if isinstance(item, _Hang):
            await asyncio.Event().wait()
            raise AssertionError("unreachable")
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Response):
            return item
        return Response(status=item, body=b"ok" if item < 400 else b"error")


class MutableEndpoints:
    """An EndpointSource whose sets can change (bumping `version`), like the control plane's."""

    def __init__(self, table: Mapping[str, Sequence[Endpoint]] | None = None) -> None:
        self._table = {k: tuple(v) for k, v in (table or {}).items()}
        self._version = 1

    @property
    def version(self) -> int:
        return self._version

    def endpoints(self, service: str) -> tuple[Endpoint, ...]:
        return self._table.get(service, ())

    def set(self, service: str, endpoints: Sequence[Endpoint]) -> None:
        self._table[service] = tuple(endpoints)
        self._version += 1


def make_request(
    method: str = "GET",
    target: str = "/",
    *,
    authority: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes | MemoryStream = b"",
    upstream: str = "",
    peer_identity: str = "",
) -> Request:
    """A request with a fresh context (upstream preset when a test skips routing)."""
    context = RequestContext(upstream=upstream, peer_identity=peer_identity)
    return Request(
        method=method,
        target=target,
        headers=headers,
        body=body,
        authority=authority,
        context=context,
    )


async def body_bytes(body: Body) -> bytes:
    """A buffered body as it is; a streamed one read to its end."""
    if isinstance(body, bytes):
        return body
    chunks = []
    while chunk := await body.read():
        chunks.append(chunk)
    return b"".join(chunks)


def count_loop_timers(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays of the running loop's call_later calls from now on (the timers still work)."""
    loop = asyncio.get_running_loop()
    delays: list[float] = []
    call_later = loop.call_later

    def counting(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        delays.append(delay)
        return call_later(delay, callback, *args)

    monkeypatch.setattr(loop, "call_later", counting)
    return delays
