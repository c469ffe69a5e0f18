from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from analytics.controlplane.ca import CertificateAuthority
from analytics.controlplane.errors import Conflict, Forbidden, InvalidRequest
from analytics.controlplane.identity import SpiffeId
from tests.unit.analytics.controlplane.helpers import ManualClock

ORDERS = SpiffeId("mesh.test", "default", "orders")


def make_csr(uris: list[str], key: object | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sidecar")])
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm)  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def open_ca(tmp_path: Path, clock: ManualClock) -> CertificateAuthority:
    return CertificateAuthority.open(
        tmp_path / "ca", "mesh.test", root_ttl_s=365 * 86400.0, clock=clock
    )


def test_issued_cert_chains_to_bundle_with_spiffe_san_eku_and_ttl(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    ca = open_ca(tmp_path, clock)

    issued = ca.issue(make_csr([ORDERS.uri]), ORDERS, ttl_s=24 * 3600.0)

    leaf = x509.load_pem_x509_certificate(issued.certificate_chain[0].encode())
    root = x509.load_pem_x509_certificate(issued.trust_bundle[0].encode())
    leaf.verify_directly_issued_by(root)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://mesh.test/ns/default/sa/orders"
    ]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = leaf.not_valid_after_utc.timestamp() - clock.now
    assert lifetime == pytest.approx(24 * 3600.0, abs=1.0)
    assert ca.verify_workload(leaf) == ORDERS


def test_csr_requesting_another_identity_is_refused(tmp_path: Path) -> None:
    ca = open_ca(tmp_path, ManualClock(time.time()))
    with pytest.raises(Forbidden):
        ca.issue(make_csr(["spiffe://mesh.test/ns/default/sa/payments"]), ORDERS, 3600.0)
    with pytest.raises(Forbidden):
        ca.issue(make_csr([ORDERS.uri, "spiffe://mesh.test/ns/default/sa/x"]), ORDERS, 3600.0)
    with pytest.raises(InvalidRequest):
        ca.issue(make_csr([]), ORDERS, 3600.0)


def test_garbage_and_weak_csrs_are_rejected(tmp_path: Path) -> None:
    ca = open_ca(tmp_path, ManualClock(time.time()))
    with pytest.raises(InvalidRequest):
        ca.issue("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", ORDERS, 3600.0)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidRequest, match="2048"):
        ca.issue(make_csr([ORDERS.uri], weak), ORDERS, 3600.0)


def test_root_is_persisted_0600_and_reloaded(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    first = open_ca(tmp_path, clock)
    keys = list((tmp_path / "ca").glob("*.key.pem"))

    second = open_ca(tmp_path, clock)

    assert len(keys) == 1
    assert stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert second.active_fingerprint == first.active_fingerprint
    assert second.trust_bundle() == first.trust_bundle()


def test_rotation_bundle_carries_both_roots_until_the_old_is_retired(tmp_path: Path) -> None:
    ca = open_ca(tmp_path, ManualClock(time.time()))
    old = ca.active_fingerprint
    old_leaf = x509.load_pem_x509_certificate(
        ca.issue(make_csr([ORDERS.uri]), ORDERS, 3600.0).certificate_chain[0].encode()
    )

    new = ca.add_root()
    assert len(ca.trust_bundle()) == 2
    assert ca.active_fingerprint == old
    ca.activate(new)
    new_leaf = x509.load_pem_x509_certificate(
        ca.issue(make_csr([ORDERS.uri]), ORDERS, 3600.0).certificate_chain[0].encode()
    )
    assert ca.verify_workload(old_leaf) == ORDERS  # still trusted during the overlap
    with pytest.raises(Conflict):
        ca.retire(new)
    ca.retire(old)

    assert [r.fingerprint for r in ca.roots()] == [new]
    assert ca.verify_workload(new_leaf) == ORDERS
    with pytest.raises(Forbidden, match="trusted root"):
        ca.verify_workload(old_leaf)
    assert open_ca(tmp_path, ManualClock(time.time())).active_fingerprint == new


def test_expired_leaf_is_not_accepted(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    ca = open_ca(tmp_path, clock)
    leaf = x509.load_pem_x509_certificate(
        ca.issue(make_csr([ORDERS.uri]), ORDERS, 600.0).certificate_chain[0].encode()
    )
    clock.advance(601.0)
    with pytest.raises(Forbidden, match="validity"):
        ca.verify_workload(leaf)


def test_operator_supplied_root_signs_and_foreign_roots_are_not_trusted(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    supplier = open_ca(tmp_path / "operator", clock)
    root = supplier.roots()[0]
    cert_file, key_file = tmp_path / "root.pem", tmp_path / "root.key"
    cert_file.write_text(root.pem)
    key_file.write_bytes(
        root.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca = CertificateAuthority.open(
        tmp_path / "ca",
        "mesh.test",
        root_ttl_s=86400.0,
        cert_file=cert_file,
        key_file=key_file,
        clock=clock,
    )
    stranger = open_ca(tmp_path / "stranger", clock)

    issued = ca.issue(make_csr([ORDERS.uri]), ORDERS, 3600.0)
    foreign = stranger.issue(make_csr([ORDERS.uri]), ORDERS, 3600.0)

    assert ca.active_fingerprint == root.fingerprint
    assert not list((tmp_path / "ca").glob("*.key.pem"))  # the operator's key is not copied
    leaf = x509.load_pem_x509_certificate(issued.certificate_chain[0].encode())
    assert ca.verify_workload(leaf) == ORDERS
    with pytest.raises(Forbidden):
        ca.verify_workload(x509.load_pem_x509_certificate(foreign.certificate_chain[0].encode()))
