"""The sidecar's mesh identity: its key, its SPIFFE certificate, rotation and the trust bundle.

The EC P-256 key is generated here and never leaves the process; the control plane signs a CSR
carrying the SPIFFE URI SAN. Certificates rotate at half-life (minus jitter, with a fresh key);
`on_update` (TlsContexts.update) swaps the TLS contexts. File mode loads --cert/--key/--ca instead.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sidecar.cpclient import ControlPlaneClient, ControlPlaneError, ControlPlaneUnavailable, Signer
from sidecar.stack import Sleep
from sidecar.tls import Credentials

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

# `cryptography` (about 10 MB of RSS) is imported inside the functions that need it: a sidecar
# without mTLS or a control-plane identity never loads it (issue 3: RSS <= 40 MB).

__all__ = [
    "CertificateRequester",
    "CpClientCertificates",
    "IdentityError",
    "IdentityManager",
    "Issued",
    "build_csr",
    "generate_key",
    "load_credentials_files",
    "signer_for",
    "spiffe_id",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Random = Callable[[], float]


class IdentityError(Exception):
    """A certificate could not be loaded, requested or parsed."""


def spiffe_id(trust_domain: str, namespace: str, service: str) -> str:
    """`spiffe://<trust-domain>/ns/<namespace>/sa/<service>`, after checking each part."""
    for name, part in (
        ("trust_domain", trust_domain),
        ("namespace", namespace),
        ("service", service),
    ):
        if not part or "/" in part or part != part.lower() or ":" in part:
            raise ValueError(
                f"{name} must be a non-empty lower-case name without '/', got {part!r}"
            )
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service}"


def generate_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def build_csr(key: ec.EllipticCurvePrivateKey, identity: str) -> str:
    """A PEM CSR for `identity` (its only SAN), signed with `key`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity[-64:])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True, slots=True)
class Issued:
    """What the CA returned: chain (leaf first), trust bundle and validity (unix seconds)."""

    certificate_chain: tuple[str, ...]
    trust_bundle: tuple[str, ...]
    spiffe_id: str
    not_before: float
    not_after: float


class CertificateRequester(Protocol):
    """Sends a CSR to a CA and returns the signed certificate."""

    async def __call__(self, csr_pem: str) -> Issued: ...


def _leaf_identity_and_validity(cert_pem: str, source: str) -> tuple[str, float, float]:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError as exc:
        raise IdentityError(f"{source}: not a PEM certificate: {exc}") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    if len(spiffe) != 1:
        raise IdentityError(f"{source}: the certificate must carry exactly one spiffe:// URI SAN")
    return (
        spiffe[0],
        cert.not_valid_before_utc.timestamp(),
        cert.not_valid_after_utc.timestamp(),
    )


def load_credentials_files(cert: Path, key: Path, ca: Path) -> Credentials:
    """File mode (static setups, tests): chain, key and trust bundle from PEM files."""
    try:
        cert_pem, key_pem, ca_pem = cert.read_text(), key.read_text(), ca.read_text()
    except OSError as exc:
        raise IdentityError(f"cannot read TLS files: {exc}") from exc
    identity, not_before, not_after = _leaf_identity_and_validity(cert_pem, str(cert))
    try:
        return Credentials(cert_pem, key_pem, ca_pem, identity, not_before, not_after)
    except ValueError as exc:
        raise IdentityError(str(exc)) from exc


class CpClientCertificates:
    """`POST /certificates` through the control-plane client (bootstrap token or signed)."""

    def __init__(self, client: ControlPlaneClient) -> None:
        self._client = client

    async def __call__(self, csr_pem: str) -> Issued:
        try:
            response = await self._client.call("POST", "/certificates", {"csr": csr_pem})
            doc = response.json()
        except (ControlPlaneError, ControlPlaneUnavailable) as exc:
            raise IdentityError(f"certificate request failed: {exc}") from exc
        except ValueError as exc:
            raise IdentityError(f"control plane sent a malformed certificate: {exc}") from exc
        return _issued(doc)


def signer_for(credentials: Credentials, clock: Clock = time.time) -> Signer:
    """Signs control-plane requests with the workload key (PROTOCOL.md "Credentials") while the
    certificate is valid; once it has expired the signer returns no headers."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(credentials.key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError("only EC workload keys can sign control-plane requests")
    leaf = x509.load_pem_x509_certificate(credentials.cert_chain_pem.encode())
    cert_header = base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()

    def sign(method: str, target: str, body: bytes) -> tuple[tuple[str, str], ...]:
        now = clock()
        if now >= credentials.not_after:
            # Expired (the sidecar was down or the CA away past the certificate's life): the
            # control plane refuses it, so sign nothing and the client falls back to its
            # bootstrap token (cpclient), which can still renew the certificate.
            return ()
        seconds = int(now)
        digest = hashlib.sha256(body).hexdigest()
        message = f"meshlens-cp-v1\n{method.upper()}\n{target}\n{seconds}\n{digest}".encode()
        signature = base64.b64encode(key.sign(message, ec.ECDSA(hashes.SHA256()))).decode()
        return (
            ("x-meshlens-client-cert", cert_header),
            ("x-meshlens-signature", f"{seconds}.{signature}"),
        )

    return sign


def _issued(doc: object) -> Issued:
    if not isinstance(doc, dict):
        raise IdentityError("control plane sent a malformed certificate: not an object")
    try:
        return Issued(
            certificate_chain=tuple(doc["certificate_chain"]),
            trust_bundle=tuple(doc["trust_bundle"]),
            spiffe_id=str(doc["spiffe_id"]),
            not_before=float(doc["not_before"]),
            not_after=float(doc["not_after"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise IdentityError(f"control plane sent a malformed certificate: {exc!r}") from exc


OnUpdate = Callable[[Credentials], None]


class IdentityManager:
    """Holds the current credentials; rotates them at half-life (+jitter) in a background task."""

    def __init__(
        self,
        identity: str,
        requester: CertificateRequester,
        on_update: OnUpdate,
        *,
        jitter: float = 0.1,
        retry_s: float = 5.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        random: Random = _random.random,
    ) -> None:
        if not 0 <= jitter < 0.5:
            raise ValueError(f"jitter must be in [0, 0.5), got {jitter}")
        self.identity = identity
        self._requester = requester
        self._on_update = on_update
        self._jitter = jitter
        self._retry_s = retry_s
        self._clock, self._sleep, self._random = clock, sleep, random
        self.credentials: Credentials | None = None
        self.rotations = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Credentials | None:
        """Try to get the first certificate, then start the rotation task (which retries)."""
        try:
            await self.rotate()
        except IdentityError as exc:
            self.failures += 1
            logger.warning("no certificate yet; retrying", extra={"error": str(exc)})
            self._task = asyncio.get_running_loop().create_task(self._retry_then_run())
            return None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="identity-rotation")
        return self.credentials

    async def _retry_then_run(self) -> None:
        await self._sleep(self._retry_s)
        await self._run()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def next_rotation_at(self) -> float:
        """Half-life of the current certificate, brought forward by up to `jitter` of its life."""
        creds = self.credentials
        if creds is None:
            return self._clock()
        life = creds.not_after - creds.not_before
        return creds.not_before + life * (0.5 - self._jitter * self._random())

    async def rotate(self) -> Credentials:
        """A fresh key and certificate now; applied through `on_update`."""
        key = generate_key()
        issued = await self._requester(build_csr(key, self.identity))
        if issued.spiffe_id != self.identity or not issued.certificate_chain:
            raise IdentityError(f"CA issued {issued.spiffe_id!r}, asked for {self.identity!r}")
        credentials = Credentials(
            cert_chain_pem="".join(issued.certificate_chain),
            key_pem=_key_pem(key),
            trust_bundle_pem="".join(issued.trust_bundle),
            spiffe_id=issued.spiffe_id,
            not_before=issued.not_before,
            not_after=issued.not_after,
        )
        self._on_update(credentials)
        self.credentials = credentials
        self.rotations += 1
        logger.info(
            "certificate issued",
            extra={"spiffe_id": self.identity, "not_after": _iso(issued.not_after)},
        )
        return credentials

    def update_trust_bundle(self, bundle: tuple[str, ...]) -> None:
        """Trust a new bundle (from the control plane's watch) with the current certificate."""
        creds = self.credentials
        pem = "".join(bundle)
        if creds is None or pem == creds.trust_bundle_pem or not bundle:
            return
        updated = replace(creds, trust_bundle_pem=pem)
        self._on_update(updated)
        self.credentials = updated
        logger.info("trust bundle updated", extra={"roots": len(bundle)})

    async def _run(self) -> None:
        while True:
            await self._sleep(max(0.0, self.next_rotation_at() - self._clock()))
            try:
                await self.rotate()
            except (IdentityError, OSError) as exc:
                self.failures += 1
                logger.warning("certificate rotation failed", extra={"error": str(exc)})
                await self._sleep(self._retry_s)
            except Exception as exc:  # task boundary: a CA bug must not stop future rotations
                self.failures += 1
                logger.exception("certificate rotation failed", extra={"error": str(exc)})
                await self._sleep(self._retry_s)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat()
