"""End-user JWT authentication at a real inbound sidecar: keys from a JWKS served on loopback
(fetched through the sidecar's own pool, refetched on rotation), 401 with the reason, claims
passed to authz rules and to the app, the subject recorded on the server span."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sidecar.app import Sidecar
from tests.integration.conftest import ScriptedUpstream, url
from tests.integration.test_sidecar_telemetry import OtlpSink, sink  # noqa: F401
from tests.jwtkit import SigningKey, jwks_json, make_token

pytestmark = pytest.mark.timeout(30)

Sidecars = Callable[..., Awaitable[Sidecar]]
ISS = "https://login.example.com"
OLD = SigningKey.rsa("2026-old")
NEW = SigningKey.ec("2026-new")


class JwksServer:
    """Serves `document` at /jwks.json and counts the fetches."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.fetches = 0
        self.url = ""

    async def jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.Response(body=self.document.encode(), content_type="application/json")


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = JwksServer(jwks_json(OLD))
    app = web.Application()
    app.router.add_get("/jwks.json", server.jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a for a in runner.addresses if isinstance(a, tuple))[1]
    server.url = f"http://127.0.0.1:{port}/jwks.json"
    yield server
    await runner.cleanup()


def _config(jwks_url: str) -> dict[str, Any]:
    return {
        "jwt": {
            "providers": [
                {
                    "name": "login",
                    "issuer": ISS,
                    "audiences": ["orders"],
                    "jwks": {"url": jwks_url, "min_refetch_interval_s": 0},
                    "claim_to_headers": [{"claim": "sub", "header": "x-user"}],
                }
            ],
            "rules": [{"path_prefix": "/healthz", "requires": "none"}],
        },
        "authz": {
            "rules": [
                {
                    "name": "admins-only",
                    "action": "deny",
                    "methods": ["POST"],
                    "paths": ["/admin/*"],
                    "claims": {"role": "!admin"},
                },
            ]
        },
    }


def _token(key: SigningKey, **extra: Any) -> str:
    claims = {"iss": ISS, "sub": "alice", "aud": "orders", "exp": time.time() + 300, **extra}
    return make_token(key, claims)


async def _call(
    sidecar: Sidecar, token: str | None, path: str = "/orders", method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    assert sidecar.addresses is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method, url(sidecar.addresses.inbound) + path, headers=headers
        ) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                await response.read(),
            )


async def test_tokens_are_verified_against_a_remote_jwks_and_rotation_is_picked_up(
    jwks: JwksServer, upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    sidecar = await sidecars("orders", upstream.port, config=_config(jwks.url))

    status, _, _ = await _call(sidecar, _token(OLD))
    assert status == 200
    seen = upstream.seen[-1].headers
    assert seen["x-user"] == "alice" and "authorization" not in seen

    status, headers, body = await _call(sidecar, _token(OLD, exp=time.time() - 3600))
    assert status == 401 and headers["x-meshlens-jwt-error"] == "expired"
    assert headers["x-meshlens-error"] == "unauthenticated" and b"Jwt is expired" in body
    status, headers, _ = await _call(sidecar, _token(OLD, aud="billing"))
    assert status == 401 and headers["x-meshlens-jwt-error"] == "bad_audience"
    status, headers, _ = await _call(sidecar, None)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert (await _call(sidecar, None, "/healthz"))[0] == 200
    assert jwks.fetches == 1  # cached

    jwks.document = jwks_json(NEW)  # the issuer rotates its signing key
    assert (await _call(sidecar, _token(NEW)))[0] == 200
    assert jwks.fetches == 2  # unknown kid -> one refetch
    status, headers, _ = await _call(sidecar, _token(OLD))
    assert status == 401 and headers["x-meshlens-jwt-error"] == "unknown_kid"
    stats: Any = sidecar.stats_doc()["jwt"]
    assert stats["verified"] == 2 and stats["providers"]["login"]["keys"] == 1


async def test_alg_none_and_forged_tokens_never_reach_the_app(
    jwks: JwksServer, upstream: ScriptedUpstream, sidecars: Sidecars
) -> None:
    sidecar = await sidecars("orders", upstream.port, config=_config(jwks.url))
    unsigned = make_token(None, {"iss": ISS, "sub": "root", "aud": "orders"})
    status, headers, _ = await _call(sidecar, unsigned)
    assert status == 401 and headers["x-meshlens-jwt-error"] == "bad_algorithm"
    forged = make_token(SigningKey.rsa(OLD.kid), {"iss": ISS, "sub": "root", "aud": "orders"})
    status, headers, _ = await _call(sidecar, forged)
    assert status == 401 and headers["x-meshlens-jwt-error"] == "bad_signature"
    assert upstream.seen == []


async def test_claims_drive_authz_and_the_subject_is_on_the_server_span(
    jwks: JwksServer,
    upstream: ScriptedUpstream,
    sidecars: Sidecars,
    sink: OtlpSink,  # noqa: F811
) -> None:
    sidecar = await sidecars(
        "orders", upstream.port, config=_config(jwks.url), collector_url=sink.url
    )
    viewer = _token(OLD, role="viewer", sub="bob")
    status, headers, _ = await _call(sidecar, viewer, "/admin/users", "POST")
    assert status == 403 and headers["x-meshlens-error"] == "rbac_denied"
    admin = _token(OLD, role="admin")
    assert (await _call(sidecar, admin, "/admin/users", "POST"))[0] == 200
    assert (await _call(sidecar, viewer, "/orders"))[0] == 200

    await sidecar.telemetry.flush()
    servers = [s for _, s in sink.spans if s.kind == Span.SPAN_KIND_SERVER]
    subjects = [
        next((kv.value.string_value for kv in s.attributes if kv.key == "enduser.id"), None)
        for s in servers
    ]
    assert sorted(x for x in subjects if x) == ["alice", "bob", "bob"]
