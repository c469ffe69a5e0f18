"""A final whole response goes downstream as it arrives: the HTTP/1.1 codec, a fused route and
the upstream pool together (RequestContext.write_final / final). The client has the response
before the route's own work on it (attempt span, outlier, balancer) runs; a response the route
retries does not go out, and the retried one is written by the codec after the layers."""

from __future__ import annotations

import asyncio
from typing import Any

from sidecar.build import build_outbound
from sidecar.codec import HttpServer, ServerConfig, _ServerProtocol
from sidecar.config import parse_config
from sidecar.telemetry import Telemetry, TelemetryConfig
from sidecar.telemetry.context import IdSource
from sidecar.upstream import UpstreamConfig, UpstreamPool
from tests.unit.sidecar.test_codec import FakeTransport, settle
from tests.unit.sidecar.test_upstream import FakeNetwork

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"


class Clock:
    """Telemetry's unix-ns clock, noting what the client had been sent at each reading (the
    spans read it as an attempt, and the request, begin and end)."""

    def __init__(self, client: list[FakeTransport]) -> None:
        self.client = client
        self.now = 1_700_000_000_000_000_000
        self.seen: list[bytes] = []

    def __call__(self) -> int:
        self.seen.append(bytes(self.client[0].out) if self.client else b"")
        self.now += 1_000_000
        return self.now


async def serve(
    retry: dict[str, Any] | None, answers: list[bytes], raw: bytes
) -> tuple[Clock, FakeTransport]:
    net = FakeNetwork()
    for answer in answers:
        net.actions.append(lambda _, answer=answer: answer)
    pool = UpstreamPool(UpstreamConfig(), connect=net.connect)
    client: list[FakeTransport] = []
    clock = Clock(client)
    telemetry = Telemetry(TelemetryConfig(service="web"), now_ns=clock, ids=IdSource(seed=1))
    route: dict[str, Any] = {"name": "api", "match": {"path_prefix": "/"}}
    route["destinations"] = [{"upstream": "reviews"}]
    if retry is not None:
        route["retry"] = retry
    doc = {"upstreams": {"reviews": {"endpoints": ["10.0.0.1:80"]}}, "routes": [route]}
    stack = build_outbound(
        parse_config(doc),
        terminal=pool,
        outer=[telemetry.outbound_layer()],
        per_attempt=[telemetry.attempt_layer()],
    )
    assert stack.describe()["fused_routes"] == ["api", "default"]
    server = HttpServer(ServerConfig(), lambda: stack.handler)
    protocol = _ServerProtocol(server)
    transport = FakeTransport(protocol)
    client.append(transport)
    protocol.connection_made(transport)
    clock.seen.clear()  # (from here: the readings of the requests' spans)
    protocol.data_received(raw)
    for _ in range(400):  # (bounded: 2 s) until each request is answered, and the layers ran
        if bytes(transport.out).count(b"HTTP/1.1 ") == raw.count(b"GET "):
            break
        await asyncio.sleep(0.005)
    await settle()
    await pool.close()
    return clock, transport


async def test_the_client_has_a_final_response_before_the_route_records_it() -> None:
    clock, transport = await serve(None, [OK], b"GET /a HTTP/1.1\r\nHost: reviews\r\n\r\n")
    written = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    assert bytes(transport.out) == written
    # request and attempt began before it; the attempt and the request ended after it went out
    assert clock.seen == [b"", b"", written, written]


async def test_a_response_the_route_retries_does_not_go_out() -> None:
    clock, transport = await serve(
        {"attempts": 2, "backoff_base_ms": 1, "backoff_max_ms": 1},
        [BUSY, OK],
        b"GET /a HTTP/1.1\r\nHost: reviews\r\n\r\n",
    )
    # the 503 was retried: nothing went out then; the retry's answer is written by the codec
    # once the layers returned it (the retries of a fused route are layered)
    assert clock.seen == [b""] * 6  # (request begin, 2 x attempt begin and end, request end)
    assert bytes(transport.out) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_pipelined_requests_are_answered_in_order_each_once() -> None:
    clock, transport = await serve(
        None, [OK, OK, OK], b"GET /1 HTTP/1.1\r\nHost: reviews\r\n\r\n" * 3
    )
    one = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    assert bytes(transport.out) == one * 3
    assert clock.seen == [one * n for n in (0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3)]
    assert not transport.closed
