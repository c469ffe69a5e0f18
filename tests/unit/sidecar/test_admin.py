"""The admin handler: routes, methods, content types, readiness and drain (no sockets)."""

from __future__ import annotations

import json

from sidecar.admin import PROMETHEUS_CONTENT_TYPE, admin_handler
from sidecar.http import Request, RequestContext, Response, header_value


class Source:
    def __init__(self) -> None:
        self.ready = True
        self.drains = 0

    def is_ready(self) -> bool:
        return self.ready

    def metrics_text(self) -> str:
        return "istio_requests_total 1\n"

    def config_doc(self) -> dict[str, object]:
        return {"version": "7"}

    def stats_doc(self) -> dict[str, object]:
        return {"version": "7", "listeners": {}}

    def request_drain(self) -> bool:
        self.drains += 1
        return self.drains == 1


async def call(source: Source, method: str, target: str, peer: str = "127.0.0.1") -> Response:
    context = RequestContext(downstream_addr=peer)
    return await admin_handler(source)(Request(method, target, authority="admin", context=context))


async def test_health_metrics_config_and_stats() -> None:
    source = Source()
    health = await call(source, "GET", "/healthz")
    assert health.status == 200 and health.body == b"ok\n"
    metrics = await call(source, "GET", "/metrics")
    assert header_value(metrics.headers, "content-type") == PROMETHEUS_CONTENT_TYPE
    assert metrics.body == b"istio_requests_total 1\n"
    config = await call(source, "GET", "/config?pretty=1")  # the query is ignored
    assert header_value(config.headers, "content-type") == "application/json; charset=utf-8"
    assert isinstance(config.body, bytes) and json.loads(config.body) == {"version": "7"}
    stats = await call(source, "HEAD", "/stats")  # HEAD is served like GET
    assert stats.status == 200


async def test_readiness_follows_the_source() -> None:
    source = Source()
    assert (await call(source, "GET", "/ready")).status == 200
    source.ready = False
    not_ready = await call(source, "GET", "/ready")
    assert not_ready.status == 503 and not_ready.body == b"not ready\n"


async def test_drain_is_a_post_and_reports_whether_it_started() -> None:
    source = Source()
    refused = await call(source, "GET", "/drain")
    assert refused.status == 405 and header_value(refused.headers, "allow") == "POST"
    assert source.drains == 0
    first = await call(source, "POST", "/drain")
    second = await call(source, "POST", "/drain")
    assert first.status == second.status == 202
    assert isinstance(first.body, bytes) and isinstance(second.body, bytes)
    assert json.loads(first.body) == {"draining": True, "started": True}
    assert json.loads(second.body) == {"draining": True, "started": False}


async def test_drain_is_refused_to_another_host_and_reading_is_not() -> None:
    # deployed, the admin listens on 0.0.0.0 (probes, scrapes): anyone reaching it could POST
    # /drain and stop the sidecar
    source = Source()
    refused = await call(source, "POST", "/drain", peer="203.0.113.9")
    assert refused.status == 403 and refused.body == b"/drain is served to this host only\n"
    assert source.drains == 0
    assert (await call(source, "GET", "/ready", peer="203.0.113.9")).status == 200
    assert (await call(source, "POST", "/drain", peer="::1")).status == 202


async def test_unknown_paths_and_methods() -> None:
    source = Source()
    assert (await call(source, "GET", "/nope")).status == 404
    wrong = await call(source, "POST", "/metrics")
    assert wrong.status == 405 and header_value(wrong.headers, "allow") == "GET, HEAD"
