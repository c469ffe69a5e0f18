"""mTLS between sidecars on loopback with certificates from the real CA code: who is refused,
permissive mode, SPIFFE identity checks on the outbound side, rotation under continuous load."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from analytics.settings import BootstrapTokenSpec, Settings
from analytics.up import AnalyticsComponent
from collector.store import Store
from sidecar.app import Sidecar
from sidecar.http import Endpoint, Request, RequestContext
from sidecar.identity import IdentityManager
from sidecar.tls import TlsContexts
from sidecar.upstream import UpstreamConfig, UpstreamPool
from tests.integration.conftest import ScriptedUpstream, eventually, write_json
from tests.integration.pki import (
    Pki,
    anonymous_client,
    client_with,
    expired_clock,
    refused,
    tls_get,
)

MakeSidecar = Callable[..., Awaitable[Sidecar]]


async def _strict_server(
    pki: Pki, tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream, **extra: Any
) -> Sidecar:
    cert, key, ca = pki.write(pki.issue("server"), tmp_path / "server")
    return await sidecars(
        "server",
        upstream.port,
        mtls=extra.pop("mtls", "strict"),
        trust_domain=pki.trust_domain,
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        **extra,
    )


async def test_strict_inbound_accepts_a_mesh_client_and_records_its_identity(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream
) -> None:
    pki = Pki(tmp_path / "ca")
    access_log = tmp_path / "access.log"
    server = await _strict_server(pki, tmp_path, sidecars, upstream, access_log=str(access_log))
    assert server.addresses is not None
    client = client_with(pki.issue("client"), pki.bundle)

    status, _, body = await tls_get(server.addresses.inbound, client, "/hello")

    assert status == 200 and b'"/hello"' in body
    stats: Any = server.stats_doc()
    assert stats["mtls"]["mode"] == "strict"
    assert stats["mtls"]["spiffe_id"] == "spiffe://example.org/ns/default/sa/server"
    await server.stop()  # flushes the access log
    entries = [json.loads(line) for line in access_log.read_text().splitlines()]
    assert [e["peer_identity"] for e in entries] == ["spiffe://example.org/ns/default/sa/client"]


async def test_strict_inbound_refuses_plaintext_no_cert_other_ca_expired_and_foreign_identity(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream
) -> None:
    pki = Pki(tmp_path / "ca")
    other = Pki(tmp_path / "other-ca")
    server = await _strict_server(pki, tmp_path, sidecars, upstream)
    assert server.addresses is not None
    address = server.addresses.inbound

    assert await refused(address, None)  # plaintext HTTP
    assert await refused(address, anonymous_client(pki.bundle))  # TLS, no certificate
    assert await refused(address, client_with(other.issue("client"), pki.bundle))
    assert await refused(address, client_with(pki.issue("client", clock=expired_clock), pki.bundle))
    foreign = pki.issue("client", trust_domain="evil.example")  # right CA, wrong trust domain
    assert await refused(address, client_with(foreign, pki.bundle))
    # and a good client still gets through afterwards
    ok = client_with(pki.issue("client"), pki.bundle)
    assert (await tls_get(address, ok))[0] == 200
    assert upstream.seen and len(upstream.seen) == 1
    refusals: Any = server.stats_doc()["mtls"]
    assert refusals["refusals"]["plaintext"] == 1
    assert refusals["refusals"]["foreign_trust_domain"] == 1
    assert refusals["refusals"]["handshake_failed"] >= 1


async def test_permissive_inbound_accepts_plaintext_and_tls(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream
) -> None:
    pki = Pki(tmp_path / "ca")
    server = await _strict_server(pki, tmp_path, sidecars, upstream, mtls="permissive")
    assert server.addresses is not None
    address = server.addresses.inbound

    assert (await tls_get(address, None))[0] == 200
    assert (await tls_get(address, anonymous_client(pki.bundle)))[0] == 200
    assert (await tls_get(address, client_with(pki.issue("client"), pki.bundle)))[0] == 200
    other = Pki(tmp_path / "other-ca")
    assert await refused(address, client_with(other.issue("client"), pki.bundle))


async def test_outbound_sidecar_speaks_mtls_and_checks_the_server_identity(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream
) -> None:
    pki = Pki(tmp_path / "ca")
    server = await _strict_server(pki, tmp_path, sidecars, upstream)
    assert server.addresses is not None
    host, port = server.addresses.inbound
    good = "spiffe://example.org/ns/default/sa/server"
    wrong = "spiffe://example.org/ns/default/sa/impostor"
    config = {
        "upstreams": {
            "server": {"endpoints": [{"host": host, "port": port, "identity": good}]},
            "wrongid": {"endpoints": [{"host": host, "port": port, "identity": wrong}]},
            "plain": {"endpoints": [{"host": host, "port": port}]},
        }
    }
    cert, key, ca = pki.write(pki.issue("client"), tmp_path / "client")
    client = await sidecars(
        "client",
        1,
        config=config,
        trust_domain="example.org",
        cert_file=cert,
        key_file=key,
        ca_file=ca,
    )
    assert client.addresses is not None
    out = client.addresses.outbound

    async def call(service: str) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection(*out)
        try:
            writer.write(
                f"GET /x HTTP/1.1\r\nhost: {service}\r\nconnection: close\r\n\r\n".encode()
            )
            from tests.integration.conftest import read_response

            return await read_response(reader)
        finally:
            writer.close()

    status, _, _ = await call("server")
    assert status == 200
    status, headers, body = await call("wrongid")
    assert status == 503 and headers["x-meshlens-error"] == "connect_failure"
    assert b"expected spiffe://example.org/ns/default/sa/impostor" in body
    status, _, _ = await call("plain")  # no identity: plaintext, which strict refuses
    assert status >= 500


class _Ticks:
    """An injected clock + sleep: each `tick()` lets one rotation sleep end (time jumps ahead)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._wakes: asyncio.Queue[None] = asyncio.Queue()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await self._wakes.get()
        self.now += seconds

    def tick(self) -> None:
        self._wakes.put_nowait(None)


async def test_rotation_under_continuous_load_fails_no_request(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream
) -> None:
    pki = Pki(tmp_path / "ca")
    server = await _strict_server(pki, tmp_path, sidecars, upstream)
    assert server.addresses is not None
    host, port = server.addresses.inbound
    first = pki.issue("server")
    server_ticks, client_ticks = _Ticks(first.not_before), _Ticks(first.not_before)
    server_identity = IdentityManager(
        first.spiffe_id,
        pki.requester,
        server.tls.update,
        clock=server_ticks.clock,
        sleep=server_ticks.sleep,
    )
    client_tls = TlsContexts("off")
    client_identity = IdentityManager(
        "spiffe://example.org/ns/default/sa/client",
        pki.requester,
        client_tls.update,
        clock=client_ticks.clock,
        sleep=client_ticks.sleep,
    )
    await server_identity.start()
    await client_identity.start()
    pool = UpstreamPool(UpstreamConfig(), tls=client_tls.client)  # long-lived connections
    endpoint = Endpoint(host, port, service="server", identity=first.spiffe_id)
    results: list[int] = []
    stop = asyncio.Event()

    async def worker() -> None:
        for i in range(1000):  # bounded; the test stops the workers after the rotations
            if stop.is_set():
                return
            # every 25th request on a new connection: handshakes keep happening during rotations
            fresh = UpstreamPool(UpstreamConfig(), tls=client_tls.client) if i % 25 == 0 else None
            context = RequestContext(endpoint=endpoint)
            try:
                response = await (fresh or pool)(Request("GET", "/load", context=context))
                body = response.body
                if not isinstance(body, bytes):
                    while await body.read():
                        pass
            finally:
                if fresh is not None:
                    await fresh.close()
            handshakes[0] += fresh is not None
            results.append(response.status)

    handshakes = [0]
    handshakes_at: list[int] = []
    workers = [asyncio.create_task(worker()) for _ in range(5)]
    try:
        for rotation in range(1, 6):
            want = rotation * 300
            await eventually(lambda: len(results) >= want, timeout_s=30.0)  # noqa: B023
            server_ticks.tick()
            client_ticks.tick()
            await eventually(
                lambda: min(server_identity.rotations, client_identity.rotations) > want // 300,  # noqa: B023
            )
            handshakes_at.append(handshakes[0])
        await eventually(lambda: len(results) >= 2000, timeout_s=30.0)
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await server_identity.close()
        await client_identity.close()
        await pool.close()

    assert len(results) >= 2000
    assert set(results) == {200}
    assert server_identity.rotations == 6 and client_identity.rotations == 6
    # new handshakes (with the rotated certificates) after every rotation
    marks = [*handshakes_at, handshakes[0]]
    assert all(after > before for before, after in itertools.pairwise(marks))
    assert pool.opened == 5  # and the long-lived connections kept serving across rotations


async def test_sidecars_get_certificates_from_the_real_control_plane_and_a_forged_token_does_not(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream, store: Store
) -> None:
    tokens = {"server": "server-token-0123456789ab", "client": "client-token-0123456789ab"}
    settings = Settings(
        store_url=store.url,
        data_dir=tmp_path / "cp",
        http_port=0,
        trust_domain="example.org",
        bootstrap_tokens=tuple(
            BootstrapTokenSpec.parse(f"default/{svc}:{tok}") for svc, tok in tokens.items()
        ),
        watch_timeout_s=2.0,
    )
    plane = AnalyticsComponent(settings, store, graceful_s=0.5, out=io.StringIO())
    await plane.start()
    try:
        cp = f"http://127.0.0.1:{plane.port}"
        common: dict[str, Any] = {"control_plane_url": cp, "trust_domain": "example.org"}
        server = await sidecars(
            "server", upstream.port, mtls="strict", bootstrap_token=tokens["server"], **common
        )
        client = await sidecars("client", 1, bootstrap_token=tokens["client"], **common)
        forged = await sidecars(
            "server",
            upstream.port,
            mtls="strict",
            bootstrap_token="forged-token-0123456789",
            initial_sync_s=0.2,  # it will never sync
            **common,
        )
        assert server.addresses is not None and forged.addresses is not None
        assert server.tls.credentials is not None
        assert server.tls.credentials.spiffe_id == "spiffe://example.org/ns/default/sa/server"
        client_context = client.tls.client()
        assert client_context is not None

        # mTLS between two sidecars whose certificates came from the control plane's CA
        assert (await tls_get(server.addresses.inbound, client_context, "/cp"))[0] == 200
        # the forged token got nothing: no certificate, and its strict listener admits no one
        assert forged.tls.credentials is None
        assert forged.identity is not None and forged.identity.failures >= 1
        assert await refused(forged.addresses.inbound, client_context)
        # renewal is signed with the current certificate (no bearer token needed any more)
        assert server.identity is not None
        renewed = await server.identity.rotate()
        assert renewed.spiffe_id == server.tls.credentials.spiffe_id
        assert server.identity.rotations == 2
        assert (await tls_get(server.addresses.inbound, client_context, "/cp"))[0] == 200
    finally:
        await plane.shutdown()


async def test_the_policy_document_switches_strict_to_permissive_live(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream
) -> None:
    pki = Pki(tmp_path / "ca")
    doc = {"version": "1", "mtls": {"mode": "strict"}}
    server = await _strict_server(pki, tmp_path, sidecars, upstream, config=doc)
    assert server.addresses is not None and server.options.config_path is not None
    config = Path(server.options.config_path)
    address = server.addresses.inbound
    assert await refused(address, None)

    write_json(config, {"version": "2", "mtls": {"mode": "permissive"}})
    await eventually(lambda: server.tls.mode == "permissive")

    assert (await tls_get(address, None))[0] == 200


async def test_a_plain_sidecar_rejects_a_document_asking_for_mtls(
    tmp_path: Path, sidecars: MakeSidecar, upstream: ScriptedUpstream
) -> None:
    plain = await sidecars("plain", upstream.port, config={"version": "1"})
    assert plain.options.config_path is not None
    config = Path(plain.options.config_path)
    write_json(config, {"version": "2", "mtls": {"mode": "strict"}})

    await eventually(lambda: plain.control.rejected == 1)

    assert plain.control.active.version == "1"
    assert "mtls.mode" in " ".join(plain.control.last_errors)
