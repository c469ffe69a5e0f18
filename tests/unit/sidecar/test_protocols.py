"""protocol_terminal by upstream name (a dict updated in place) and the loop-guarded terminal."""

from __future__ import annotations

import pytest

from sidecar.errors import NoRoute
from sidecar.http import Endpoint, Request, Response
from sidecar.protocols import OwnListeners, guarded_terminal, protocol_terminal


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.seen.append(request)
        return Response(200, body=self.name.encode())


def _request(upstream: str, version: str = "1.1", content_type: str = "text/plain") -> Request:
    request = Request("POST", "/", (("content-type", content_type),), version=version)
    request.context.upstream = upstream
    return request


@pytest.mark.parametrize(
    ("upstream", "version", "content_type", "expected"),
    [
        ("a", "1.1", "text/plain", b"h2"),  # configured h2
        ("g", "1.1", "text/plain", b"h2"),  # configured grpc
        ("b", "2", "text/plain", b"http1"),  # configured http1 wins over the downstream's h2
        ("b", "1.1", "application/grpc", b"h2"),  # gRPC always needs HTTP/2
        ("unknown", "2", "text/plain", b"h2"),  # not in the dict: auto
        ("unknown", "1.1", "text/plain", b"http1"),
    ],
)
async def test_protocol_by_upstream_dict(
    upstream: str, version: str, content_type: str, expected: bytes
) -> None:
    protocols = {"a": "h2", "b": "http1", "g": "grpc"}
    handler = protocol_terminal(Recorder("http1"), Recorder("h2"), protocols)
    assert (await handler(_request(upstream, version, content_type))).body == expected


async def test_protocol_dict_is_read_per_request() -> None:
    protocols: dict[str, str] = {}
    handler = protocol_terminal(Recorder("http1"), Recorder("h2"), protocols)
    assert (await handler(_request("a"))).body == b"http1"
    protocols["a"] = "h2"  # the owner updates it in place (a new config version)
    assert (await handler(_request("a"))).body == b"h2"


async def test_guarded_terminal_refuses_own_listeners_and_restores() -> None:
    inner = Recorder("pool")
    own = OwnListeners(frozenset({"127.0.0.1"}))
    restored: list[Request] = []

    def restore(request: Request) -> Request:
        restored.append(request)
        return request

    handler = guarded_terminal(inner, own, restore)
    request = _request("web")
    request.context.endpoint = Endpoint("127.0.0.1", 15001)
    assert (await handler(request)).body == b"pool"  # ports not bound yet: nothing to refuse
    own.ports = frozenset({15001})
    assert own.includes("127.0.0.1", 15001) and not own.includes("10.0.0.1", 15001)
    with pytest.raises(NoRoute, match="own listener"):
        await handler(request)
    request.context.endpoint = Endpoint("10.0.0.1", 15001)  # another host, same port
    assert (await handler(request)).body == b"pool"
    assert restored == inner.seen and len(inner.seen) == 2
