"""Authorization at a strict mTLS inbound sidecar: rules on the verified caller identity, method
and path block exactly the calls they name; observe-only lets them through."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sidecar.app import Sidecar
from tests.integration.conftest import ScriptedUpstream
from tests.integration.pki import Pki, client_with, tls_get

MakeSidecar = Callable[..., Awaitable[Sidecar]]


def _authz(enforce: bool) -> dict[str, Any]:
    return {
        "authz": {
            "enforce": enforce,
            "rules": [
                {
                    "name": "no-batch-writes",
                    "action": "deny",
                    "principals": ["spiffe://example.org/ns/jobs/*"],
                    "methods": ["GET"],
                    "paths": ["/orders*"],
                },
                {"name": "audit-admin", "action": "audit", "paths": ["/admin*"]},
            ],
        }
    }


async def _server(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream, enforce: bool
) -> tuple[Pki, Sidecar]:
    pki = Pki(tmp_path / "ca")
    cert, key, ca = pki.write(pki.issue("orders"), tmp_path / "orders")
    server = await sidecars(
        "orders",
        upstream.port,
        config=_authz(enforce),
        mtls="strict",
        trust_domain="example.org",
        cert_file=cert,
        key_file=key,
        ca_file=ca,
    )
    return pki, server


async def test_a_deny_rule_blocks_exactly_the_calls_it_names(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream
) -> None:
    pki, server = await _server(tmp_path, sidecars, upstream, enforce=True)
    assert server.addresses is not None
    address = server.addresses.inbound
    batch = client_with(pki.issue("batch", namespace="jobs"), pki.bundle)
    frontend = client_with(pki.issue("frontend", namespace="shop"), pki.bundle)

    status, headers, _ = await tls_get(address, batch, "/orders/7")
    assert status == 403 and headers["x-meshlens-error"] == "rbac_denied"
    assert (await tls_get(address, batch, "/carts/7"))[0] == 200
    assert (await tls_get(address, frontend, "/orders/7"))[0] == 200
    assert (await tls_get(address, frontend, "/admin"))[0] == 200  # audit only records
    assert [s.path for s in upstream.seen] == ["/carts/7", "/orders/7", "/admin"]
    stats: Any = server.stats_doc()["authz"]
    assert stats["denied"] == 1 and stats["audited"] == 1


async def test_observe_only_authz_lets_denied_calls_through(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream
) -> None:
    pki, server = await _server(tmp_path, sidecars, upstream, enforce=False)
    assert server.addresses is not None
    batch = client_with(pki.issue("batch", namespace="jobs"), pki.bundle)

    assert (await tls_get(server.addresses.inbound, batch, "/orders/7"))[0] == 200
    stats: Any = server.stats_doc()["authz"]
    assert stats["would_deny"] == 1


async def _raw_status(address: tuple[str, int], target: str) -> int:
    """The status of one request sent with this exact target (clients would normalize it)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(5):
            line = await reader.readline()
        return int(line.split()[1])
    finally:
        writer.close()


async def test_a_path_rule_judges_the_path_the_app_will_serve(
    sidecars: MakeSidecar, upstream: ScriptedUpstream
) -> None:
    # A deny on /admin* let /x/../admin, /./admin, /%61dmin, /%2e/admin and //admin through
    # (the raw path does not start with /admin; the app resolves each to /admin). The path is
    # now normalized before the rules see it, and forwarded as they saw it.
    config = {"authz": {"rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin*"]}]}}
    server = await sidecars("orders", upstream.port, config=config)
    assert server.addresses is not None
    sneaky = [
        "/x/../admin",
        "/./admin",
        "/%61dmin",
        "/%2e/admin",
        "/public/%2E%2E/admin",
        "//admin",
    ]
    for target in sneaky:
        assert await _raw_status(server.addresses.inbound, target) == 403, target
    assert upstream.seen == []
    assert await _raw_status(server.addresses.inbound, "/x/..//public/./%6Bey") == 200
    assert [s.path for s in upstream.seen] == ["/public/key"]
    # --path-normalization none: the old behaviour, for apps that need raw paths
    raw = await sidecars("orders", upstream.port, config=config, path_normalization="none")
    assert raw.addresses is not None
    assert await _raw_status(raw.addresses.inbound, "/x/../admin") == 200
