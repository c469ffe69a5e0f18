"""Test helpers for end-user JWTs: signing keys (RS256/ES256/EdDSA), their public JWKs, and
tokens signed (or forged) with them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = ["SigningKey", "b64url", "jwks_json", "make_token", "segment"]

SigningPrivate = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, size: int | None = None) -> str:
    size = size or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(size, "big"))


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: SigningPrivate

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def ed25519(cls, kid: str) -> SigningKey:
        return cls(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())

    def jwk(self) -> dict[str, Any]:
        key = self.private
        if isinstance(key, rsa.RSAPrivateKey):
            n = key.public_key().public_numbers()
            return {
                "kty": "RSA",
                "kid": self.kid,
                "alg": self.alg,
                "n": _uint(n.n),
                "e": _uint(n.e),
            }
        if isinstance(key, ec.EllipticCurvePrivateKey):
            p = key.public_key().public_numbers()
            return {
                "kty": "EC",
                "kid": self.kid,
                "crv": "P-256",
                "x": _uint(p.x, 32),
                "y": _uint(p.y, 32),
            }
        raw = key.public_key().public_bytes_raw()
        return {"kty": "OKP", "kid": self.kid, "crv": "Ed25519", "x": b64url(raw)}

    def sign(self, data: bytes) -> bytes:
        key = self.private
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return key.sign(data)


def jwks_json(*keys: SigningKey) -> str:
    return json.dumps({"keys": [k.jwk() for k in keys]})


def make_token(
    key: SigningKey | None,
    claims: dict[str, Any],
    *,
    alg: str | None = None,
    kid: str | None = "",
    hmac_secret: bytes | None = None,
) -> str:
    """A compact JWS; `alg`/`kid` override the header; `hmac_secret` forges an HS256 signature;
    key None: an unsigned token (empty signature)."""
    header: dict[str, Any] = {"typ": "JWT", "alg": alg or (key.alg if key else "none")}
    chosen_kid = key.kid if kid == "" and key is not None else kid
    if chosen_kid:
        header["kid"] = chosen_kid
    signing_input = f"{segment(header)}.{segment(claims)}".encode()
    if hmac_secret is not None:
        signature = hmac.new(hmac_secret, signing_input, hashlib.sha256).digest()
    elif key is None:
        signature = b""
    else:
        signature = key.sign(signing_input)
    return f"{signing_input.decode()}.{b64url(signature)}"
