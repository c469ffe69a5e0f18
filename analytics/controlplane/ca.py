"""The mesh certificate authority: roots (generated or operator-supplied), SPIFFE leaf issuance.

Roots live in `<data_dir>/ca/<fingerprint>.{cert,key}.pem` (keys 0600); the trust bundle is every
root there plus an operator-supplied one. Rotation: `add_root()` (bundle carries both), then
`activate()` the new one, and `retire()` the old one once every leaf signed by it has expired.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from analytics.controlplane.csr import check_requested_identity, leaf_key_usage, parse_csr, san_uris
from analytics.controlplane.errors import Conflict, Forbidden, NotFound
from analytics.controlplane.identity import SpiffeId

__all__ = ["CertificateAuthority", "IssuedCertificate", "Root"]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
# Leaves start slightly in the past so a peer whose clock lags a little still accepts them.
_BACKDATE_S = 60.0
_ACTIVE_FILE = "active"


@dataclass(frozen=True, slots=True)
class Root:
    """One trust anchor: its certificate, its signing key (None when retired elsewhere)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A signed leaf: PEM chain (leaf first), the bundle to trust, identity and validity."""

    certificate_chain: tuple[str, ...]
    trust_bundle: tuple[str, ...]
    spiffe_id: str
    serial: str
    not_before: float
    not_after: float


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _load_key(data: bytes, source: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{source}: only EC root keys are supported")
    return key


class CertificateAuthority:
    """Signs workload CSRs with the active root and verifies workload certificates."""

    def __init__(
        self,
        directory: Path,
        trust_domain: str,
        *,
        root_ttl_s: float,
        operator_root: Root | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._dir = directory
        self._trust_domain = trust_domain
        self._root_ttl_s = root_ttl_s
        self._operator_root = operator_root
        self._clock = clock
        self._roots: dict[str, Root] = {}
        self._active = ""

    @classmethod
    def open(
        cls,
        directory: Path,
        trust_domain: str,
        *,
        root_ttl_s: float,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        clock: Clock = time.time,
    ) -> CertificateAuthority:
        """Load the roots under `directory` (creating one on first start) or the operator's."""
        operator_root = None
        if cert_file is not None and key_file is not None:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            operator_root = Root(cert=cert, key=_load_key(key_file.read_bytes(), str(key_file)))
        ca = cls(
            directory, trust_domain, root_ttl_s=root_ttl_s, operator_root=operator_root, clock=clock
        )
        ca._load()
        return ca

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def active_fingerprint(self) -> str:
        return self._active

    def roots(self) -> tuple[Root, ...]:
        """Every trusted root, the active one first."""
        others = [r for fp, r in sorted(self._roots.items()) if fp != self._active]
        return (self._roots[self._active], *others)

    def trust_bundle(self) -> tuple[str, ...]:
        return tuple(root.pem for root in self.roots())

    def _load(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._operator_root is not None:
            self._roots[self._operator_root.fingerprint] = self._operator_root
        for cert_path in sorted(self._dir.glob("*.cert.pem")):
            key_path = cert_path.with_name(cert_path.name.replace(".cert.pem", ".key.pem"))
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            root = Root(cert=cert, key=_load_key(key_path.read_bytes(), str(key_path)))
            self._roots[root.fingerprint] = root
        active_path = self._dir / _ACTIVE_FILE
        active = active_path.read_text().strip() if active_path.exists() else ""
        if active in self._roots:
            self._active = active
        elif self._operator_root is not None:
            self._active = self._operator_root.fingerprint
        elif self._roots:
            self._active = sorted(self._roots)[0]
        else:
            self._active = self.add_root()
            self._write_active()
        logger.info(
            "certificate authority ready",
            extra={"active_root": self._active, "roots": len(self._roots)},
        )

    def _write_active(self) -> None:
        (self._dir / _ACTIVE_FILE).write_text(self._active + "\n")

    def add_root(self) -> str:
        """Generate a new root and add it to the trust bundle (not yet signing); its fingerprint."""
        now = self._clock()
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self._trust_domain),
                x509.NameAttribute(NameOID.COMMON_NAME, f"meshlens root {int(now)}"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - _BACKDATE_S))
            .not_valid_after(_utc(now + self._root_ttl_s))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        root = Root(cert=cert, key=key)
        fp = root.fingerprint
        _write_private(
            self._dir / f"{fp}.key.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        (self._dir / f"{fp}.cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._roots[fp] = root
        logger.info("root certificate added", extra={"root": fp})
        return fp

    def activate(self, fingerprint: str) -> None:
        """Sign new leaves with the root `fingerprint` (already in the bundle)."""
        if fingerprint not in self._roots:
            raise NotFound(f"no root {fingerprint} in the trust bundle")
        self._active = fingerprint
        self._write_active()
        logger.info("signing root activated", extra={"root": fingerprint})

    def retire(self, fingerprint: str) -> None:
        """Drop a non-active root from the trust bundle and delete its files."""
        if fingerprint not in self._roots:
            raise NotFound(f"no root {fingerprint} in the trust bundle")
        if fingerprint == self._active:
            raise Conflict("the active root cannot be retired; activate another one first")
        if self._operator_root is not None and fingerprint == self._operator_root.fingerprint:
            raise Conflict("the operator-supplied root is configured, not managed here")
        del self._roots[fingerprint]
        for suffix in (".cert.pem", ".key.pem"):
            (self._dir / f"{fingerprint}{suffix}").unlink(missing_ok=True)
        logger.info("root retired", extra={"root": fingerprint})

    def issue(self, csr_pem: str, identity: SpiffeId, ttl_s: float) -> IssuedCertificate:
        """Sign `csr_pem` for `identity` after checking its signature, key and requested SAN."""
        csr = parse_csr(csr_pem)
        check_requested_identity(csr, identity)
        root = self._roots[self._active]
        now = self._clock()
        not_before = now - _BACKDATE_S
        not_after = min(now + ttl_s, root.cert.not_valid_after_utc.timestamp())
        public_key = csr.public_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.trust_domain),
                x509.NameAttribute(NameOID.COMMON_NAME, identity.service),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(root.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(not_before))
            .not_valid_after(_utc(not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(leaf_key_usage(public_key), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), False
            )
            .sign(root.key, hashes.SHA256())
        )
        return IssuedCertificate(
            certificate_chain=(cert.public_bytes(serialization.Encoding.PEM).decode(),),
            trust_bundle=self.trust_bundle(),
            spiffe_id=identity.uri,
            serial=format(cert.serial_number, "x"),
            not_before=not_before,
            not_after=not_after,
        )

    def verify_workload(self, cert: x509.Certificate) -> SpiffeId:
        """The SPIFFE identity of a workload certificate issued by a trusted, unexpired root."""
        now = _utc(self._clock())
        issuer = None
        for root in self._roots.values():
            try:
                cert.verify_directly_issued_by(root.cert)
            except (ValueError, TypeError, InvalidSignature):
                continue
            issuer = root
            break
        if issuer is None:
            raise Forbidden("certificate is not issued by a trusted root")
        for checked in (cert, issuer.cert):
            if not checked.not_valid_before_utc <= now <= checked.not_valid_after_utc:
                raise Forbidden("certificate is outside its validity period")
        uris = san_uris(cert)
        if len(uris) != 1:
            raise Forbidden("certificate must carry exactly one URI SAN")
        identity = SpiffeId.parse(uris[0])
        if identity.trust_domain != self._trust_domain:
            raise Forbidden(f"certificate belongs to trust domain {identity.trust_domain!r}")
        return identity
