"""TLS contexts and peer identity, with in-memory handshakes (ssl.MemoryBIO, no sockets)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from sidecar.tls import (
    Credentials,
    TlsContexts,
    TlsListener,
    client_context,
    peer_identity,
    server_context,
    spiffe_id_of,
)
from tests.integration.pki import Pki, anonymous_client, client_with

SERVER = "spiffe://example.org/ns/default/sa/server"
CLIENT = "spiffe://example.org/ns/default/sa/client"


def _handshake(
    client: ssl.SSLContext, server: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake between two contexts in memory; raises ssl.SSLError on refusal."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_side=False)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):  # a TLS 1.3 handshake needs a few flights
        for name, obj in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server's verdict on the client certificate arrives after the client
            # finished; reading surfaces an alert as an SSLError
            try:
                c.read(1)
            except ssl.SSLWantReadError:
                pass
            return c, s
    raise AssertionError("handshake did not finish")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "ca")


def test_mesh_client_and_server_verify_each_other_and_see_spiffe_ids(pki: Pki) -> None:
    server = server_context(pki.issue("server"), "strict")
    client = client_context(pki.issue("client"))

    c, s = _handshake(client, server)

    assert c.version() == "TLSv1.3"
    assert peer_identity(s) == CLIENT
    assert peer_identity(c) == SERVER
    assert peer_identity(None) == ""


def test_strict_requires_a_client_certificate_permissive_does_not(pki: Pki) -> None:
    creds = pki.issue("server")
    with pytest.raises(ssl.SSLError):
        _handshake(anonymous_client(pki.bundle), server_context(creds, "strict"))
    _, s = _handshake(anonymous_client(pki.bundle), server_context(creds, "permissive"))
    assert peer_identity(s) == ""


def test_a_client_certificate_from_another_ca_is_refused(pki: Pki, tmp_path: Path) -> None:
    other = Pki(tmp_path / "other")
    server = server_context(pki.issue("server"), "permissive")
    with pytest.raises(ssl.SSLError):
        _handshake(client_with(other.issue("client"), pki.bundle), server)


def test_tls_1_2_is_refused(pki: Pki) -> None:
    client = client_context(pki.issue("client"))
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _handshake(client, server_context(pki.issue("server"), "strict"))


def test_spiffe_id_of_needs_exactly_one_spiffe_uri() -> None:
    assert spiffe_id_of({"subjectAltName": (("URI", SERVER),)}) == SERVER
    assert spiffe_id_of({"subjectAltName": (("URI", SERVER), ("URI", CLIENT))}) == ""
    assert spiffe_id_of({"subjectAltName": (("URI", "https://x"),)}) == ""
    assert spiffe_id_of({"subjectAltName": (("DNS", "server"),)}) == ""
    assert spiffe_id_of({}) == "" and spiffe_id_of(None) == ""


def test_update_swaps_contexts_and_leaves_the_old_ones_intact(pki: Pki) -> None:
    contexts = TlsContexts("strict")
    assert contexts.server() is None and contexts.client() is None
    contexts.update(pki.issue("server"))
    old_server = contexts.server()
    contexts.update(pki.issue("server"))
    assert contexts.server() is not old_server and contexts.updates == 2
    assert old_server is not None and old_server.verify_mode == ssl.CERT_REQUIRED

    contexts.set_mode("permissive")
    server = contexts.server()
    assert server is not None and server.verify_mode == ssl.CERT_OPTIONAL
    assert old_server.verify_mode == ssl.CERT_REQUIRED  # live connections keep theirs


def test_listener_refusal_rules(pki: Pki) -> None:
    contexts = TlsContexts("strict")
    listener = TlsListener(contexts, lambda: None, trust_domain="example.org")  # type: ignore[arg-type,return-value]
    assert listener.refuse_reason("", tls=False) == "plaintext"
    assert listener.refuse_reason("", tls=True) == "no_identity"
    assert listener.refuse_reason("spiffe://evil.example/ns/a/sa/b", tls=True) == (
        "foreign_trust_domain"
    )
    assert listener.refuse_reason(CLIENT, tls=True) == ""
    contexts.set_mode("permissive")
    assert listener.refuse_reason("", tls=False) == ""
    assert listener.refuse_reason("", tls=True) == ""
    assert listener.refuse_reason("spiffe://evil.example/ns/a/sa/b", tls=True) != ""


def test_credentials_and_modes_are_validated(pki: Pki) -> None:
    good = pki.issue("server")
    with pytest.raises(ValueError, match="spiffe"):
        Credentials(good.cert_chain_pem, good.key_pem, good.trust_bundle_pem, "x", 0.0, 1.0)
    with pytest.raises(ValueError, match="not_after"):
        Credentials(good.cert_chain_pem, good.key_pem, good.trust_bundle_pem, SERVER, 1.0, 1.0)
    with pytest.raises(ValueError, match="mode"):
        TlsContexts("sometimes")  # type: ignore[arg-type]
