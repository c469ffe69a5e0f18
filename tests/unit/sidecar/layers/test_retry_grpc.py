"""Retry on gRPC statuses: listed codes (UNAVAILABLE by default) for any method, never
DEADLINE_EXCEEDED."""

from __future__ import annotations

import pytest

from sidecar.http import Request, Response, Trailers
from sidecar.layers.retry import RetryConfig, retry_layer
from sidecar.stack import Handler, compose

GRPC = (("content-type", "application/grpc"),)


class GrpcUpstream:
    """Answers the scripted grpc-status codes in turn (Trailers-Only, or in trailers)."""

    def __init__(self, codes: list[int], *, in_trailers: bool = False) -> None:
        self.codes = codes
        self.in_trailers = in_trailers
        self.calls = 0

    async def __call__(self, request: Request) -> Response:
        code = str(self.codes[min(self.calls, len(self.codes) - 1)])
        self.calls += 1
        if self.in_trailers:
            return Response(200, GRPC, b"\x00" * 5, trailers=Trailers((("grpc-status", code),)))
        return Response(200, (*GRPC, ("grpc-status", code)))


async def _no_sleep(seconds: float) -> None:
    return None


def _handler(
    upstream: GrpcUpstream, grpc_on: frozenset[str] = frozenset({"unavailable"})
) -> Handler:
    retry = RetryConfig(attempts=3, budget=None, grpc_on=grpc_on)
    return compose([retry_layer(retry, sleep=_no_sleep, random=lambda: 0.0)], upstream)


async def test_unavailable_is_retried_even_for_post() -> None:
    upstream = GrpcUpstream([14, 14, 0])
    request = Request("POST", "/demo.Greeter/Hi", GRPC, b"msg")
    response = await _handler(upstream)(request)
    assert upstream.calls == 3
    assert dict(response.headers)["grpc-status"] == "0"
    assert request.context.attributes["meshlens.retry.reason"] == "grpc-unavailable"


async def test_status_in_received_trailers_counts_too() -> None:
    upstream = GrpcUpstream([14, 0], in_trailers=True)
    await _handler(upstream)(Request("POST", "/a.B/C", GRPC, b"msg"))
    assert upstream.calls == 2


async def test_deadline_exceeded_and_unlisted_codes_are_final() -> None:
    for code in (4, 13, 5):
        upstream = GrpcUpstream([code, 0])
        await _handler(upstream)(Request("POST", "/a.B/C", GRPC, b"msg"))
        assert upstream.calls == 1


async def test_listed_codes_are_retried() -> None:
    upstream = GrpcUpstream([13, 8, 0])
    await _handler(upstream, grpc_on=frozenset({"internal", "resource-exhausted"}))(
        Request("POST", "/a.B/C", GRPC, b"msg")
    )
    assert upstream.calls == 3


def test_deadline_exceeded_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="deadline-exceeded"):
        RetryConfig(grpc_on=frozenset({"deadline-exceeded"}))
