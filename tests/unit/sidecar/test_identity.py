"""Mesh identity: key + CSR, rotation at half-life with jitter on an injected clock, failures
retried, trust-bundle updates, file mode and request signing."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import asdict
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from analytics.controlplane.auth import signing_message
from sidecar.cpclient import ControlPlaneClient
from sidecar.http import Request, Response
from sidecar.identity import (
    CpClientCertificates,
    IdentityError,
    IdentityManager,
    Issued,
    build_csr,
    generate_key,
    load_credentials_files,
    signer_for,
    spiffe_id,
)
from sidecar.tls import Credentials
from sidecar.upstream import UpstreamPool
from tests.cpstub import ScriptedControlPlane
from tests.integration.pki import Pki

ID = "spiffe://example.org/ns/default/sa/orders"


def test_csr_carries_the_spiffe_id_as_its_only_san_and_a_p256_key() -> None:
    key = generate_key()
    csr = x509.load_pem_x509_csr(build_csr(key, ID).encode())
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [ID]
    assert len(list(san)) == 1
    public = csr.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert csr.is_signature_valid


def test_spiffe_id_checks_its_parts() -> None:
    assert spiffe_id("example.org", "default", "orders") == ID
    with pytest.raises(ValueError, match="namespace"):
        spiffe_id("example.org", "a/b", "orders")


class _Time:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []
        self.wake: asyncio.Queue[None] = asyncio.Queue()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await self.wake.get()
        self.now += seconds


class _FakeCa:
    """Issues Issued records with controlled validity (no signing needed for these checks)."""

    def __init__(self, pki: Pki, fail: int = 0) -> None:
        self.pki = pki
        self.fail = fail
        self.csrs: list[str] = []

    async def __call__(self, csr_pem: str) -> Issued:
        self.csrs.append(csr_pem)
        if self.fail:
            self.fail -= 1
            raise IdentityError("control plane away")
        return await self.pki.requester(csr_pem)


async def _settle(manager: IdentityManager, want: int) -> None:
    for _ in range(200):
        if manager.rotations + manager.failures >= want:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("rotation did not happen")


async def test_rotates_at_half_life_minus_jitter_with_a_fresh_key(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "ca")
    ca = _FakeCa(pki)
    applied: list[Credentials] = []
    first = await pki.requester(build_csr(generate_key(), ID))
    time = _Time(first.not_before)
    manager = IdentityManager(
        ID, ca, applied.append, jitter=0.1, clock=time.clock, sleep=time.sleep, random=lambda: 0.5
    )
    await manager.start()
    try:
        creds = applied[0]
        life = creds.not_after - creds.not_before
        assert manager.next_rotation_at() == pytest.approx(creds.not_before + life * 0.45)
        for _ in range(100):
            if time.slept:
                break
            await asyncio.sleep(0.001)
        assert time.slept[0] == pytest.approx(creds.not_before + life * 0.45 - time.now)
        time.wake.put_nowait(None)
        await _settle(manager, 2)
    finally:
        await manager.close()
    assert manager.rotations == 2 and len(applied) == 2
    assert applied[0].key_pem != applied[1].key_pem  # a new key every rotation
    assert len(set(ca.csrs)) == 2


async def test_a_failed_rotation_is_retried_and_the_old_certificate_stays(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "ca")
    ca = _FakeCa(pki)
    applied: list[Credentials] = []
    time = _Time(0.0)
    manager = IdentityManager(
        ID, ca, applied.append, retry_s=7.0, clock=time.clock, sleep=time.sleep
    )
    await manager.start()
    ca.fail = 1
    try:
        time.wake.put_nowait(None)  # rotation time: fails
        await _settle(manager, 2)
        assert manager.failures == 1 and manager.credentials is applied[0]
        for _ in range(100):
            if len(time.slept) >= 2:
                break
            await asyncio.sleep(0.001)
        assert time.slept[1] == 7.0
        time.wake.put_nowait(None)  # retry delay over
        time.wake.put_nowait(None)  # next rotation time
        await _settle(manager, 3)
    finally:
        await manager.close()
    assert manager.rotations == 2


async def test_start_without_a_reachable_ca_does_not_raise_and_retries(tmp_path: Path) -> None:
    ca = _FakeCa(Pki(tmp_path / "ca"), fail=1)
    time = _Time(0.0)
    manager = IdentityManager(ID, ca, lambda c: None, clock=time.clock, sleep=time.sleep)
    assert await manager.start() is None
    try:
        time.wake.put_nowait(None)
        time.wake.put_nowait(None)
        await _settle(manager, 2)
    finally:
        await manager.close()
    assert manager.credentials is not None


async def test_a_ca_issuing_another_identity_is_refused(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "ca")

    async def wrong(csr_pem: str) -> Issued:
        return await pki.requester(build_csr(generate_key(), ID.replace("orders", "evil")))

    manager = IdentityManager(ID, wrong, lambda c: None)
    with pytest.raises(IdentityError, match="asked for"):
        await manager.rotate()


async def test_trust_bundle_update_reapplies_the_current_certificate(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "ca")
    applied: list[Credentials] = []
    manager = IdentityManager(ID, pki.requester, applied.append)
    await manager.rotate()
    pki.ca.add_root()
    bundle = pki.ca.trust_bundle()
    assert len(bundle) == 2

    manager.update_trust_bundle(bundle)
    manager.update_trust_bundle(bundle)  # unchanged: nothing to do

    assert len(applied) == 2
    assert applied[1].cert_chain_pem == applied[0].cert_chain_pem
    assert applied[1].trust_bundle_pem == "".join(bundle)


def test_file_mode_loads_identity_and_validity(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "ca")
    creds = pki.issue("orders")
    cert, key, ca = pki.write(creds, tmp_path / "files")

    loaded = load_credentials_files(Path(cert), Path(key), Path(ca))

    assert loaded.spiffe_id == ID
    assert loaded.not_after == pytest.approx(creds.not_after)


def test_file_mode_reports_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(IdentityError, match="not a PEM certificate"):
        load_credentials_files(bad, bad, bad)
    with pytest.raises(IdentityError, match="cannot read"):
        load_credentials_files(tmp_path / "missing", bad, bad)


def test_signer_signs_the_protocol_message_with_the_workload_key(tmp_path: Path) -> None:
    creds = Pki(tmp_path / "ca").issue("orders")
    headers = dict(signer_for(creds, clock=lambda: 1700000000.5)("post", "/api/x?y=1", b"{}"))

    leaf = x509.load_der_x509_certificate(base64.b64decode(headers["x-meshlens-client-cert"]))
    seconds, _, signature = headers["x-meshlens-signature"].partition(".")
    message = signing_message("POST", "/api/x?y=1", int(seconds), b"{}")  # the reference
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(base64.b64decode(signature), message, ec.ECDSA(hashes.SHA256()))
    assert seconds == "1700000000"


async def test_an_expired_certificate_is_renewed_with_the_bootstrap_token(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "ca")
    sent: list[str] = []

    async def control_plane(request: Request) -> Response:
        headers = dict(request.headers)
        sent.append("signed" if "x-meshlens-signature" in headers else headers["authorization"])
        assert isinstance(request.body, bytes)
        issued = await pki.requester(json.loads(request.body)["csr"])
        return Response(
            201, (("content-type", "application/json"),), json.dumps(asdict(issued)).encode()
        )

    client = ControlPlaneClient("http://cp.test:8686", pool=control_plane, bootstrap_token="boot")  # type: ignore[arg-type]
    now = [0.0]

    def apply(credentials: Credentials) -> None:
        client.signer = signer_for(credentials, clock=lambda: now[0])

    manager = IdentityManager(ID, CpClientCertificates(client), apply, clock=lambda: now[0])
    first = await manager.rotate()  # no certificate yet: the bootstrap token
    now[0] = first.not_before + 60
    second = await manager.rotate()  # a valid certificate signs the renewal
    now[0] = second.not_after + 3600  # the sidecar was down past the certificate's life
    third = await manager.rotate()

    assert sent == ["Bearer boot", "signed", "Bearer boot"]
    assert third.spiffe_id == ID and manager.rotations == 3
    assert signer_for(second, clock=lambda: second.not_after)("GET", "/x", b"") == ()


@pytest.mark.parametrize(
    "body", [b"[" * 100_000 + b"]" * 100_000, b"not json", b'{"certificate_pem": 5}']
)
async def test_a_malformed_certificate_answer_is_an_identity_error(body: bytes) -> None:
    cp = ScriptedControlPlane({"/": [(201, body)]})
    pool = UpstreamPool()
    client = ControlPlaneClient(await cp.start(), pool=pool, bootstrap_token="t" * 20)
    try:
        with pytest.raises(IdentityError, match="malformed"):
            await CpClientCertificates(client)(build_csr(generate_key(), ID))
    finally:
        await pool.close()
        await cp.close()
