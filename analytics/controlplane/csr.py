"""Checks on workload CSRs before signing: signature, key strength, the requested SPIFFE ID."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from analytics.controlplane.errors import Forbidden, InvalidRequest
from analytics.controlplane.identity import SpiffeId

__all__ = ["check_requested_identity", "leaf_key_usage", "parse_csr", "san_uris"]


def parse_csr(csr_pem: str) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise InvalidRequest(f"csr is not a PEM certificate signing request: {exc}") from exc
    if not csr.is_signature_valid:
        raise InvalidRequest("csr signature does not verify")
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InvalidRequest("RSA keys must be at least 2048 bits")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise InvalidRequest(f"EC curve {key.curve.name} is not allowed (P-256 or P-384)")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidRequest("csr key must be EC P-256/P-384, RSA >= 2048 or Ed25519")
    return csr


def san_uris(obj: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        san = obj.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def check_requested_identity(csr: x509.CertificateSigningRequest, identity: SpiffeId) -> None:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise InvalidRequest(f"csr must request the URI SAN {identity.uri}") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [identity.uri] or len(list(san)) != 1:
        raise Forbidden(f"csr requests {uris or list(san)}; this credential allows {identity.uri}")


def leaf_key_usage(public_key: object) -> x509.KeyUsage:
    # RSA key exchange needs key_encipherment; EC/EdDSA keys only sign (TLS 1.3 is ECDHE anyway).
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
