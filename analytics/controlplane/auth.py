"""Who is calling the control plane: operator API tokens, sidecar bootstrap tokens, workload certs.

Operators and bootstrapping sidecars send `Authorization: Bearer <token>`; tokens are compared by
SHA-256 in constant time over every configured token. A sidecar holding a mesh certificate instead
proves possession of its key on each request (works behind any TLS terminator and over plain ASGI):
  x-meshlens-client-cert: base64(DER of its leaf certificate)
  x-meshlens-signature:   <unix seconds>.<base64 signature>
signed over the lines "meshlens-cp-v1", METHOD, path?query as sent, unix seconds and the hex
SHA-256 of the body, joined by newlines; ECDSA-SHA256 (EC keys), PKCS#1 v1.5-SHA256 (RSA) or
Ed25519. The timestamp must be within `skew_s` of the server clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from analytics.controlplane.ca import CertificateAuthority
from analytics.controlplane.errors import Forbidden, Unauthenticated
from analytics.settings import ApiTokenSpec, BootstrapTokenSpec, hash_token

__all__ = [
    "CERT_HEADER",
    "SIGNATURE_HEADER",
    "Authenticator",
    "Principal",
    "PrincipalKind",
    "sign_request",
    "signing_message",
]

CERT_HEADER = "x-meshlens-client-cert"
SIGNATURE_HEADER = "x-meshlens-signature"
PrincipalKind = Literal["viewer", "operator", "bootstrap", "workload"]
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller; `name` is what the audit log records (never a secret)."""

    kind: PrincipalKind
    name: str
    namespace: str = ""
    service: str = ""

    def require_reader(self) -> None:
        if self.kind not in ("viewer", "operator"):
            raise Forbidden(f"{self.kind} credentials cannot read the control-plane API")

    def require_operator(self) -> None:
        if self.kind != "operator":
            raise Forbidden(f"{self.kind} credentials cannot change the control plane")

    def require_workload(self, namespace: str, service: str) -> None:
        """Allow only a sidecar credential scoped to `namespace/service`."""
        if self.kind not in ("bootstrap", "workload"):
            raise Forbidden(f"{self.kind} credentials are not a sidecar identity")
        if (self.namespace, self.service) != (namespace, service):
            raise Forbidden(
                f"credential is for {self.namespace}/{self.service}, not {namespace}/{service}"
            )


def signing_message(method: str, target: str, timestamp: int, body: bytes) -> bytes:
    """The bytes a workload signs for one request (see the module docstring)."""
    digest = hashlib.sha256(body).hexdigest()
    return f"meshlens-cp-v1\n{method.upper()}\n{target}\n{timestamp}\n{digest}".encode()


def sign_request(key: SigningKey, method: str, target: str, timestamp: int, body: bytes) -> str:
    """The `x-meshlens-signature` header value for one request."""
    message = signing_message(method, target, timestamp, body)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(message)
    return f"{timestamp}.{base64.b64encode(signature).decode()}"


def _verify_signature(cert: x509.Certificate, signature: bytes, message: bytes) -> None:
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            raise Forbidden("unsupported certificate key type")
    except InvalidSignature as exc:
        raise Forbidden("request signature does not verify") from exc


class Authenticator:
    """Turns request credentials into a `Principal`, or raises Unauthenticated / Forbidden."""

    def __init__(
        self,
        api_tokens: Sequence[ApiTokenSpec],
        bootstrap_tokens: Sequence[BootstrapTokenSpec],
        ca: CertificateAuthority,
        *,
        skew_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api_tokens = tuple(api_tokens)
        self._bootstrap_tokens = tuple(bootstrap_tokens)
        self._ca = ca
        self._skew_s = skew_s
        self._clock = clock

    def authenticate(
        self,
        *,
        authorization: str | None,
        client_cert: str | None,
        signature: str | None,
        method: str,
        target: str,
        body: bytes,
    ) -> Principal:
        if client_cert is not None or signature is not None:
            return self._workload(client_cert, signature, method, target, body)
        if authorization is None:
            raise Unauthenticated("missing credentials: send a bearer token or a client cert")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization must be 'Bearer <token>'")
        return self._bearer(token.strip())

    def _bearer(self, token: str) -> Principal:
        presented = hash_token(token)
        # Compare against every token without an early exit so timing says nothing about which
        # (or whether any) token matched.
        found: Principal | None = None
        for api in self._api_tokens:
            if hmac.compare_digest(api.sha256, presented):
                found = Principal(kind=api.role, name=f"token:{api.name}")
        for boot in self._bootstrap_tokens:
            if hmac.compare_digest(boot.sha256, presented):
                found = Principal(
                    kind="bootstrap",
                    name=f"bootstrap:{boot.namespace}/{boot.service}",
                    namespace=boot.namespace,
                    service=boot.service,
                )
        if found is None:
            raise Forbidden("invalid credentials")
        return found

    def _workload(
        self,
        client_cert: str | None,
        signature: str | None,
        method: str,
        target: str,
        body: bytes,
    ) -> Principal:
        if client_cert is None or signature is None:
            raise Unauthenticated(f"send both {CERT_HEADER} and {SIGNATURE_HEADER}")
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(client_cert, validate=True))
            stamp, _, sig_b64 = signature.partition(".")
            timestamp = int(stamp)
            sig = base64.b64decode(sig_b64, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise Forbidden("malformed client certificate or signature header") from exc
        if abs(self._clock() - timestamp) > self._skew_s:
            raise Forbidden("request signature timestamp is outside the allowed clock skew")
        identity = self._ca.verify_workload(cert)
        _verify_signature(cert, sig, signing_message(method, target, timestamp, body))
        return Principal(
            kind="workload",
            name=identity.uri,
            namespace=identity.namespace,
            service=identity.service,
        )
