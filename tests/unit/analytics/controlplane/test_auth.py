from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from analytics.controlplane.auth import Authenticator, Principal, sign_request
from analytics.controlplane.ca import CertificateAuthority
from analytics.controlplane.errors import Forbidden, Unauthenticated
from analytics.controlplane.identity import SpiffeId
from analytics.settings import ApiTokenSpec, BootstrapTokenSpec, hash_token
from tests.unit.analytics.controlplane.helpers import ManualClock
from tests.unit.analytics.controlplane.test_ca import make_csr

ORDERS = SpiffeId("mesh.test", "default", "orders")


def make_auth(tmp_path: Path, clock: ManualClock) -> tuple[Authenticator, CertificateAuthority]:
    ca = CertificateAuthority.open(tmp_path / "ca", "mesh.test", root_ttl_s=86400.0, clock=clock)
    auth = Authenticator(
        [
            ApiTokenSpec("alice", "operator", hash_token("operator-secret-000")),
            ApiTokenSpec("victor", "viewer", hash_token("viewer-secret-0000")),
        ],
        [BootstrapTokenSpec("default", "orders", hash_token("boot-orders-00000"))],
        ca,
        skew_s=60.0,
        clock=clock,
    )
    return auth, ca


def bearer(auth: Authenticator, value: str | None) -> Principal:
    return auth.authenticate(
        authorization=value, client_cert=None, signature=None, method="GET", target="/", body=b""
    )


def test_bearer_tokens_map_to_roles_and_scopes(tmp_path: Path) -> None:
    auth, _ = make_auth(tmp_path, ManualClock(time.time()))

    assert bearer(auth, "Bearer operator-secret-000") == Principal("operator", "token:alice")
    assert bearer(auth, "bearer viewer-secret-0000").kind == "viewer"
    boot = bearer(auth, "Bearer boot-orders-00000")
    assert (boot.kind, boot.namespace, boot.service) == ("bootstrap", "default", "orders")


def test_missing_credentials_are_401_and_forged_ones_403(tmp_path: Path) -> None:
    auth, _ = make_auth(tmp_path, ManualClock(time.time()))
    with pytest.raises(Unauthenticated):
        bearer(auth, None)
    with pytest.raises(Unauthenticated):
        bearer(auth, "Basic dXNlcjpwYXNz")
    with pytest.raises(Forbidden):
        bearer(auth, "Bearer boot-orders-00001")


def test_principal_permissions() -> None:
    viewer = Principal("viewer", "token:v")
    boot = Principal("bootstrap", "bootstrap:default/orders", "default", "orders")
    viewer.require_reader()
    with pytest.raises(Forbidden):
        viewer.require_operator()
    with pytest.raises(Forbidden):
        boot.require_reader()
    boot.require_workload("default", "orders")
    with pytest.raises(Forbidden):
        boot.require_workload("default", "payments")
    with pytest.raises(Forbidden):
        Principal("operator", "token:o").require_workload("default", "orders")


def issue(ca: CertificateAuthority) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = ca.issue(make_csr([ORDERS.uri], key), ORDERS, 3600.0).certificate_chain[0]
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    return key, base64.b64encode(der).decode()


def signed(
    auth: Authenticator, cert: str, signature: str, body: bytes = b"{}", target: str = "/ack"
) -> Principal:
    return auth.authenticate(
        authorization=None,
        client_cert=cert,
        signature=signature,
        method="POST",
        target=target,
        body=body,
    )


def test_workload_certificate_with_valid_signature_authenticates(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    auth, ca = make_auth(tmp_path, clock)
    key, cert = issue(ca)

    principal = signed(auth, cert, sign_request(key, "POST", "/ack", int(clock.now), b"{}"))

    assert principal == Principal("workload", ORDERS.uri, "default", "orders")


def test_tampered_body_stale_timestamp_or_foreign_key_are_refused(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    auth, ca = make_auth(tmp_path, clock)
    key, cert = issue(ca)
    now = int(clock.now)
    with pytest.raises(Forbidden, match="signature"):
        signed(auth, cert, sign_request(key, "POST", "/ack", now, b"{}"), body=b'{"x":1}')
    with pytest.raises(Forbidden, match="signature"):
        signed(auth, cert, sign_request(key, "POST", "/other", now, b"{}"))
    with pytest.raises(Forbidden, match="skew"):
        signed(auth, cert, sign_request(key, "POST", "/ack", now - 120, b"{}"))
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(Forbidden, match="signature"):
        signed(auth, cert, sign_request(stranger, "POST", "/ack", now, b"{}"))
    with pytest.raises(Forbidden, match="malformed"):
        signed(auth, "not-base64!", sign_request(key, "POST", "/ack", now, b"{}"))
    with pytest.raises(Unauthenticated):
        signed(auth, cert, None)  # type: ignore[arg-type]


def test_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    auth, _ = make_auth(tmp_path, clock)
    other = CertificateAuthority.open(tmp_path / "x", "mesh.test", root_ttl_s=86400.0, clock=clock)
    key, cert = issue(other)
    with pytest.raises(Forbidden, match="trusted root"):
        signed(auth, cert, sign_request(key, "POST", "/ack", int(clock.now), b"{}"))
