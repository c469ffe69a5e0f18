"""gRPC layers over a scripted upstream: grpc-timeout, status on the context, local replies."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.errors import ERROR_HEADER, UpstreamConnectError
from sidecar.http import Request, RequestContext, Response, Trailers, header_value
from sidecar.layers.grpc import (
    STATUS_ATTR,
    format_timeout,
    grpc_attempt_layer,
    grpc_layer,
    grpc_status,
    local_reply,
    parse_timeout,
)
from sidecar.layers.proxy_errors import proxy_errors_layer
from sidecar.stack import Handler, compose

GRPC = (("content-type", "application/grpc"), ("te", "trailers"))


class ListBody:
    """A streamed body from a list of chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    @property
    def length(self) -> int | None:
        return None

    async def read(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


def _request(*extra: tuple[str, str], path: str = "/demo.Greeter/Hi") -> Request:
    return Request("POST", path, (*GRPC, *extra), b"\x00\x00\x00\x00\x00", "greeter")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1S", 1.0), ("250m", 0.25), ("3M", 180.0), ("2H", 7200.0), ("100u", 1e-4), ("5n", 5e-9)],
)
def test_parse_timeout_reads_every_unit(value: str, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "S", "1", "1s", "123456789S", "-1S", "1.5S", "\u00b2S", "1\u00b3m"]
)
def test_parse_timeout_refuses_malformed_values(value: str) -> None:
    assert parse_timeout(value) is None


def test_format_timeout_round_trips_within_a_unit() -> None:
    assert format_timeout(0.25) == "250000u"
    assert format_timeout(500.0) == "500000m"
    assert parse_timeout(format_timeout(12.5)) == pytest.approx(12.5)
    assert format_timeout(-1) == "0u"


def test_grpc_status_from_trailers_only_head_or_received_trailers() -> None:
    head_only = Response(200, (("grpc-status", "14"), ("grpc-message", "down")))
    assert grpc_status(head_only) == (14, "down")
    pending = Trailers()
    streamed = Response(200, GRPC, ListBody([b"x"]), trailers=pending)
    assert grpc_status(streamed) is None  # not known before the body has ended
    pending.set((("grpc-status", "0"),))
    assert grpc_status(streamed) == (0, "")
    assert grpc_status(Response(200)) is None
    for odd in ("\u00b2", "9" * 5000, "x"):  # (isdigit, then int() raised)
        assert grpc_status(Response(200, (("grpc-status", odd),))) is None


async def test_status_of_a_streamed_response_is_recorded_when_its_body_ends() -> None:
    trailers = Trailers()
    body = ListBody([b"a", b"b"])

    async def upstream(request: Request) -> Response:
        return Response(200, GRPC, body, trailers=trailers)

    handler = compose([grpc_layer()], upstream)
    request = _request()
    response = await handler(request)
    assert STATUS_ATTR not in request.context.attributes
    assert response.body is not body  # wrapped to see its end; the trailers holder is kept
    assert response.trailers is trailers
    stream = response.body
    assert not isinstance(stream, bytes)
    assert await stream.read() == b"a"
    assert await stream.read() == b"b"
    trailers.set((("grpc-status", "13"), ("grpc-message", "boom")))
    assert await stream.read() == b""
    attrs = request.context.attributes
    assert attrs[STATUS_ATTR] == 13
    assert attrs["meshlens.grpc.message"] == "boom"
    assert attrs["rpc.service"] == "demo.Greeter"
    assert attrs["rpc.method"] == "Hi"
    assert attrs["meshlens.route"] == "demo.Greeter/Hi"


async def test_grpc_timeout_sets_the_deadline_and_expiry_answers_deadline_exceeded() -> None:
    seen: list[float | None] = []

    async def stuck(request: Request) -> Response:
        seen.append(request.context.deadline)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    handler = compose([grpc_layer(clock=lambda: 100.0)], stuck)
    request = _request(("grpc-timeout", "20m"))
    response = await handler(request)
    assert seen == [pytest.approx(100.02)]
    assert response.status == 200
    assert header_value(response.headers, "grpc-status") == "4"
    assert header_value(response.headers, ERROR_HEADER) == "upstream_timeout"
    assert request.context.attributes[STATUS_ATTR] == 4


async def test_attempt_layer_forwards_the_remaining_deadline_as_grpc_timeout() -> None:
    forwarded: list[str | None] = []

    async def upstream(request: Request) -> Response:
        forwarded.append(header_value(request.headers, "grpc-timeout"))
        return Response(200, (("grpc-status", "0"),))

    handler = compose([grpc_attempt_layer(clock=lambda: 10.0)], upstream)
    request = _request(("grpc-timeout", "5S"))
    request.context.deadline = 10.75
    await handler(request)
    assert forwarded == ["750000u"]
    assert request.context.attributes[STATUS_ATTR] == 0


async def test_proxy_errors_become_trailers_only_grpc_replies() -> None:
    async def refused(request: Request) -> Response:
        raise UpstreamConnectError("nope")

    handler = compose([grpc_layer(), proxy_errors_layer()], refused)
    response = await handler(_request())
    assert response.status == 200
    assert header_value(response.headers, "grpc-status") == "14"  # UNAVAILABLE
    assert header_value(response.headers, "grpc-message") == "meshlens: connect_failure"
    assert local_reply(_request(), Response(200, ((ERROR_HEADER, "x"),))).status == 200
    mapped = local_reply(_request(), Response(429, ((ERROR_HEADER, "rate_limited"),)))
    assert header_value(mapped.headers, "grpc-status") == "8"  # RESOURCE_EXHAUSTED


async def test_plain_http_requests_pass_untouched() -> None:
    async def upstream(request: Request) -> Response:
        return Response(503, ((ERROR_HEADER, "overflow"),), b"x")

    handler: Handler = compose([grpc_layer(), grpc_attempt_layer()], upstream)
    request = Request("GET", "/", (("grpc-timeout", "1n"),), context=RequestContext())
    response = await handler(request)
    assert response.status == 503
    assert request.context.attributes == {}


async def test_inbound_route_becomes_the_method_but_a_configured_route_stays() -> None:
    async def upstream(request: Request) -> Response:
        return Response(200, (("grpc-status", "0"),))

    inbound = _request()
    await compose([grpc_layer()], upstream)(inbound)
    assert inbound.context.route == "demo.Greeter/Hi"
    routed = _request()
    routed.context.route = "orders"
    await compose([grpc_layer()], upstream)(routed)
    assert routed.context.route == "orders"
    assert routed.context.attributes["meshlens.route"] == "demo.Greeter/Hi"
    odd = _request(path="/not a method")
    await compose([grpc_layer()], upstream)(odd)
    assert odd.context.route == "" and "rpc.method" not in odd.context.attributes


async def test_a_grpc_answer_made_here_never_goes_out_as_the_upstream_sends_it() -> None:
    # (RequestContext.write_final: this layer replaces responses, so a gRPC request's upstream
    # response is never written downstream before it has seen it)
    offered: list[object] = []

    async def upstream(request: Request) -> Response:
        offered.append(request.context.write_final)
        return Response(503, (), b"")

    request = _request()
    request.context.write_final = lambda context, response: None
    await compose([grpc_layer()], upstream)(request)
    assert offered == [None]
    plain = Request("GET", "/", (), b"", "svc")
    mark = plain.context.write_final = lambda context, response: None
    await compose([grpc_layer()], upstream)(plain)
    assert offered[-1] is mark  # (not gRPC: left as it is)
