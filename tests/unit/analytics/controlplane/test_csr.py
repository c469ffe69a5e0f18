from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from analytics.controlplane.csr import check_requested_identity, parse_csr, san_uris
from analytics.controlplane.errors import Forbidden, InvalidRequest
from analytics.controlplane.identity import SpiffeId
from tests.unit.analytics.controlplane.test_ca import make_csr

ORDERS = SpiffeId("mesh.test", "default", "orders")


def test_ed25519_and_p256_csrs_are_accepted_p521_is_not() -> None:
    for key in (ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())):
        csr = parse_csr(make_csr([ORDERS.uri], key))
        assert san_uris(csr) == [ORDERS.uri]
        check_requested_identity(csr, ORDERS)
    with pytest.raises(InvalidRequest, match="curve"):
        parse_csr(make_csr([ORDERS.uri], ec.generate_private_key(ec.SECP521R1())))


def test_tampered_csr_signature_is_rejected() -> None:
    pem = make_csr([ORDERS.uri])
    body = "".join(pem.splitlines()[1:-1])
    # Flip one character inside the signature (the end of the DER) and re-wrap.
    flipped = body[:-8] + ("A" if body[-8] != "A" else "B") + body[-7:]
    lines = [flipped[i : i + 64] for i in range(0, len(flipped), 64)]
    tampered = "\n".join(
        ["-----BEGIN CERTIFICATE REQUEST-----", *lines, "-----END CERTIFICATE REQUEST-----"]
    )
    with pytest.raises(InvalidRequest):
        parse_csr(tampered)


def test_requested_identity_must_be_exactly_the_allowed_one() -> None:
    other = SpiffeId("mesh.test", "shop", "orders")
    with pytest.raises(Forbidden, match="allows"):
        check_requested_identity(parse_csr(make_csr([other.uri])), ORDERS)
