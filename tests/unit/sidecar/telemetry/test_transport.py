"""OTLP/HTTP retry rules: retryable statuses, Retry-After, backoff with jitter, deadlines."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from sidecar.telemetry.transport import (
    RetryPolicy,
    TransportError,
    TransportResult,
    parse_retry_after,
    send_with_retry,
)


class ScriptedTransport:
    """The collector edge: answers each POST with the next scripted result or error."""

    def __init__(self, script: Sequence[TransportResult | Exception]) -> None:
        self.script = list(script)
        self.posts: list[tuple[str, bytes]] = []

    async def post(self, path: str, body: bytes) -> TransportResult:
        self.posts.append((path, body))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    async def close(self) -> None:
        return None


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_retries_503_with_retry_after_then_succeeds() -> None:
    transport = ScriptedTransport([TransportResult(503, "3"), TransportResult(200)])
    fake = FakeTime()
    outcome = await send_with_retry(
        transport, "/v1/traces", b"x", RetryPolicy(), sleep=fake.sleep, clock=fake.clock
    )
    assert outcome.result == "ok" and outcome.attempts == 2
    assert fake.slept == [3.0]


async def test_backoff_is_full_jitter_and_doubles_up_to_the_cap() -> None:
    script: list[TransportResult | Exception] = [TransportError("refused")] * 4
    transport = ScriptedTransport([*script, TransportResult(200)])
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=5, backoff_base_s=1.0, backoff_max_s=4.0)
    outcome = await send_with_retry(
        transport, "/v1/traces", b"x", policy, sleep=fake.sleep, clock=fake.clock, rand=lambda: 0.5
    )
    assert outcome.result == "ok" and outcome.attempts == 5
    assert fake.slept == [0.5, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500])
async def test_non_retryable_status_is_not_retried(status: int) -> None:
    transport = ScriptedTransport([TransportResult(status)])
    outcome = await send_with_retry(
        transport, "/v1/traces", b"x", RetryPolicy(), sleep=FakeTime().sleep
    )
    assert outcome.result == "rejected" and outcome.status == status
    assert len(transport.posts) == 1


async def test_gives_up_after_max_attempts() -> None:
    transport = ScriptedTransport([TransportResult(502)] * 3)
    fake = FakeTime()
    outcome = await send_with_retry(
        transport,
        "/v1/traces",
        b"x",
        RetryPolicy(max_attempts=3),
        sleep=fake.sleep,
        clock=fake.clock,
    )
    assert outcome.result == "failed" and outcome.attempts == 3 and len(fake.slept) == 2


async def test_never_sleeps_past_the_give_up_time() -> None:
    transport = ScriptedTransport([TransportResult(429, "60"), TransportResult(200)])
    fake = FakeTime()
    outcome = await send_with_retry(
        transport,
        "/v1/traces",
        b"x",
        RetryPolicy(),
        sleep=fake.sleep,
        clock=fake.clock,
        give_up_at=fake.now + 5,
    )
    assert outcome.result == "failed" and fake.slept == []


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    when = parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412480.0)
    assert when == 10.0


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(backoff_base_s=2.0, backoff_max_s=1.0)
