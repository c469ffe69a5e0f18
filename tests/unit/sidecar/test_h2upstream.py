"""Upstream protocol choice (`protocol: http1|h2|grpc|auto`) and the pool's config checks."""

from __future__ import annotations

import pytest

from sidecar.config import parse_config
from sidecar.h2upstream import H2PoolConfig, protocol_terminal
from sidecar.http import Request, Response


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    async def __call__(self, request: Request) -> Response:
        self.calls += 1
        return Response(200, body=self.name.encode())


def _request(version: str = "1.1", content_type: str = "text/plain") -> Request:
    return Request("POST", "/", (("content-type", content_type),), version=version)


@pytest.mark.parametrize(
    ("protocol", "version", "content_type", "expected"),
    [
        ("auto", "1.1", "text/plain", b"http1"),
        ("auto", "2", "text/plain", b"h2"),
        ("auto", "1.1", "application/grpc+proto", b"h2"),  # gRPC needs HTTP/2
        ("http1", "2", "text/plain", b"http1"),
        ("h2", "1.1", "text/plain", b"h2"),
        ("grpc", "1.1", "text/plain", b"h2"),
    ],
)
async def test_protocol_choice(
    protocol: str, version: str, content_type: str, expected: bytes
) -> None:
    handler = protocol_terminal(Recorder("http1"), Recorder("h2"), protocol)
    response = await handler(_request(version, content_type))
    assert response.body == expected


async def test_protocol_read_per_request() -> None:
    protocols = {"a": "h2", "b": "http1"}
    handler = protocol_terminal(
        Recorder("http1"), Recorder("h2"), lambda r: protocols.get(r.context.upstream, "auto")
    )
    request = _request()
    request.context.upstream = "a"
    assert (await handler(request)).body == b"h2"
    request.context.upstream = "b"
    assert (await handler(_request("2"))).body == b"h2"  # unknown upstream: auto
    assert (await handler(request)).body == b"http1"


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="protocol"):
        protocol_terminal(Recorder("http1"), Recorder("h2"), "spdy")
    with pytest.raises(ValueError):
        H2PoolConfig(max_connections_per_endpoint=0)


def test_config_carries_upstream_protocol_app_protocol_and_grpc_retry_codes() -> None:
    config = parse_config(
        {
            "upstreams": {"greeter": {"endpoints": ["127.0.0.1:9"], "protocol": "grpc"}},
            "routes": [
                {
                    "name": "r",
                    "match": {"hosts": ["greeter"]},
                    "destinations": [{"upstream": "greeter"}],
                    "retry": {"grpc_on": ["unavailable", "internal"]},
                }
            ],
            "inbound": {"app_protocol": "h2"},
        }
    )
    assert config.upstreams["greeter"].protocol == "grpc"
    assert config.inbound.app_protocol == "h2"
    retry = config.routes[0].retry
    assert retry is not None and retry.grpc_on == frozenset({"unavailable", "internal"})
    assert parse_config({}).inbound.app_protocol == "auto"
