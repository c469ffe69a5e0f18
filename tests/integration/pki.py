"""Test PKI for mesh mTLS: workload credentials issued by the real control-plane CA code."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from analytics.controlplane.ca import CertificateAuthority
from analytics.controlplane.identity import SpiffeId
from sidecar.identity import Issued, build_csr, generate_key, spiffe_id
from sidecar.tls import Credentials, client_context
from tests.integration.conftest import read_response

TRUST_DOMAIN = "example.org"


class Pki:
    """One CA (a directory of roots); `issue()` makes workload credentials from a real CSR."""

    def __init__(self, directory: Path, trust_domain: str = TRUST_DOMAIN) -> None:
        self.directory = directory
        self.trust_domain = trust_domain
        self.ca = CertificateAuthority.open(directory, trust_domain, root_ttl_s=30 * 86400)

    def issue(
        self,
        service: str,
        *,
        namespace: str = "default",
        ttl_s: float = 3600.0,
        trust_domain: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Credentials:
        domain = trust_domain or self.trust_domain
        ca = self.ca
        if clock is not None:  # same roots, another notion of "now" (e.g. an expired leaf)
            ca = CertificateAuthority.open(
                self.directory, self.trust_domain, root_ttl_s=30 * 86400, clock=clock
            )
        key = generate_key()
        identity = SpiffeId(domain, namespace, service)
        issued = ca.issue(build_csr(key, identity.uri), identity, ttl_s)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return Credentials(
            "".join(issued.certificate_chain),
            key_pem,
            "".join(issued.trust_bundle),
            issued.spiffe_id,
            issued.not_before,
            issued.not_after,
        )

    async def requester(self, csr_pem: str) -> Issued:
        """A `CertificateRequester` signing with this CA (identity taken from the CSR)."""
        from analytics.controlplane.csr import parse_csr, san_uris

        identity = SpiffeId.parse(san_uris(parse_csr(csr_pem))[0])
        issued = self.ca.issue(csr_pem, identity, 3600.0)
        return Issued(
            issued.certificate_chain,
            issued.trust_bundle,
            issued.spiffe_id,
            issued.not_before,
            issued.not_after,
        )

    @property
    def bundle(self) -> str:
        return "".join(self.ca.trust_bundle())

    def write(self, credentials: Credentials, directory: Path) -> tuple[str, str, str]:
        """cert, key and CA files (file mode) for `credentials`."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = (directory / "cert.pem", directory / "key.pem", directory / "ca.pem")
        paths[0].write_text(credentials.cert_chain_pem)
        paths[1].write_text(credentials.key_pem)
        paths[2].write_text(credentials.trust_bundle_pem)
        return str(paths[0]), str(paths[1]), str(paths[2])


def expired_clock() -> float:
    return time.time() - 7200.0


def anonymous_client(bundle_pem: str) -> ssl.SSLContext:
    """A TLS 1.3 client that trusts the mesh but presents no certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.load_verify_locations(cadata=bundle_pem)
    return context


def client_with(credentials: Credentials, trust_bundle_pem: str) -> ssl.SSLContext:
    """A client presenting `credentials` (maybe from another CA) that trusts `trust_bundle_pem`."""
    context = client_context(credentials)
    context.load_verify_locations(cadata=trust_bundle_pem)
    return context


async def tls_get(
    address: tuple[str, int], context: ssl.SSLContext | None, path: str = "/"
) -> tuple[int, dict[str, str], bytes]:
    """One GET over TLS (or plaintext when `context` is None); raises when refused."""
    async with asyncio.timeout(5.0):
        reader, writer = await asyncio.open_connection(*address, ssl=context)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n".encode())
            await writer.drain()
            return await read_response(reader)
        finally:
            writer.close()


async def refused(
    address: tuple[str, int], context: ssl.SSLContext | None, path: str = "/"
) -> bool:
    """True when the server gives no HTTP response (handshake failure, reset or close)."""
    try:
        await tls_get(address, context, path)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        return True
    return False


__all__ = [
    "TRUST_DOMAIN",
    "Pki",
    "anonymous_client",
    "client_with",
    "expired_clock",
    "refused",
    "spiffe_id",
    "tls_get",
]
