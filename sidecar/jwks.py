"""JSON Web Key Sets for end-user JWT verification: parse RSA/EC/OKP keys, verify signatures, and
cache a provider's set (from a file or a URL fetched through the sidecar's own upstream pool).

Only asymmetric algorithms exist here (RS256/384/512, PS256/384/512, ES256/384, EdDSA); a key is
used only with the algorithm its type allows, so `alg: none` and HS256-with-a-public-key
(algorithm confusion) can never verify.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sidecar.errors import ProxyError
from sidecar.http import Endpoint, Request, RequestContext, Response, read_body
from sidecar.stack import Clock, monotonic

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = [
    "ALGORITHMS",
    "Fetch",
    "Jwk",
    "JwkSet",
    "JwksConfig",
    "JwksError",
    "JwksSource",
    "b64url_decode",
    "parse_jwks",
    "pool_fetch",
]

logger = logging.getLogger(__name__)

_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


@cache
def _crypto() -> Any:
    """`cryptography` (~7 MB of RSS), imported on first use: only sidecars that verify JWTs
    (a config with `jwt` providers) pay for it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    return SimpleNamespace(
        InvalidSignature=InvalidSignature,
        ec=ec,
        ed25519=ed25519,
        padding=padding,
        rsa=rsa,
        encode_dss_signature=encode_dss_signature,
        hashes={"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512},
        curves={
            "P-256": (ec.SECP256R1(), 32, "ES256"),
            "P-384": (ec.SECP384R1(), 48, "ES384"),
        },
    )


ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}
)
_MAX_JWKS_BYTES = 1 << 20
_RETRY_EMPTY_S = 1.0  # with no keys at all, retry a failed load at most this often

# (url, timeout_s) -> JWKS document bytes; raises JwksError
Fetch = Callable[[str, float], Awaitable[bytes]]


class JwksError(ValueError):
    """The key set could not be read, fetched or parsed."""


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url (RFC 7515 §2); raise ValueError on anything else."""
    if not isinstance(text, str) or any(c in text for c in "=+/ \n"):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _int(value: object) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError("missing key parameter")
    return int.from_bytes(b64url_decode(value), "big")


@dataclass(frozen=True, slots=True)
class Jwk:
    """One public key, with the algorithms it may verify."""

    kid: str
    kty: str
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    algorithms: frozenset[str]

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """True when `signature` over `signing_input` is valid for `alg` under this key."""
        if alg not in self.algorithms:
            return False
        c = _crypto()
        padding = c.padding
        key: Any = self.key  # (the cryptography types are only imported for type checking)
        try:
            if isinstance(key, c.rsa.RSAPublicKey):
                digest = c.hashes[alg[2:]]()
                pad = (
                    padding.PKCS1v15()
                    if alg.startswith("RS")
                    else padding.PSS(padding.MGF1(digest), digest.digest_size)
                )
                key.verify(signature, signing_input, pad, digest)
            elif isinstance(key, c.ec.EllipticCurvePublicKey):
                size = (key.curve.key_size + 7) // 8
                if len(signature) != 2 * size:  # JWS uses raw r||s, not DER
                    return False
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                der = c.encode_dss_signature(r, s)
                key.verify(der, signing_input, c.ec.ECDSA(c.hashes[alg[2:]]()))
            else:
                key.verify(signature, signing_input)
        except c.InvalidSignature:
            return False
        return True


def _parse_key(doc: Mapping[str, Any]) -> Jwk:
    kty = doc.get("kty")
    kid = doc.get("kid", "")
    if not isinstance(kid, str):
        raise ValueError("kid must be a string")
    alg = doc.get("alg")
    if doc.get("use", "sig") != "sig":
        raise ValueError("not a signing key")
    c = _crypto()
    if kty == "RSA":
        key: Any = c.rsa.RSAPublicNumbers(_int(doc.get("e")), _int(doc.get("n"))).public_key()
        if key.key_size < 2048:
            raise ValueError(f"RSA key of {key.key_size} bits is too small (< 2048)")
        algs = frozenset(a for a in ALGORITHMS if a[:2] in ("RS", "PS"))
    elif kty == "EC":
        curve = c.curves.get(str(doc.get("crv")))
        if curve is None:
            raise ValueError(f"unsupported EC curve {doc.get('crv')!r}")
        numbers = c.ec.EllipticCurvePublicNumbers(_int(doc.get("x")), _int(doc.get("y")), curve[0])
        key = numbers.public_key()
        algs = frozenset({curve[2]})
    elif kty == "OKP":
        if doc.get("crv") != "Ed25519":
            raise ValueError(f"unsupported OKP curve {doc.get('crv')!r}")
        key = c.ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(str(doc.get("x", ""))))
        algs = frozenset({"EdDSA"})
    else:
        raise ValueError(f"unsupported kty {kty!r}")
    if alg is not None:
        if alg not in algs:
            raise ValueError(f"alg {alg!r} does not fit kty {kty}")
        algs = frozenset({alg})
    return Jwk(kid, kty, key, algs)


@dataclass(frozen=True, slots=True)
class JwkSet:
    """The usable keys of one JWKS document; keys we cannot use are skipped and counted."""

    keys: tuple[Jwk, ...]
    skipped: int = 0

    def candidates(self, kid: str | None, alg: str) -> tuple[Jwk, ...]:
        """Keys that may verify a token with header `kid` / `alg` (no kid: every fitting key)."""
        return tuple(k for k in self.keys if alg in k.algorithms and (kid is None or k.kid == kid))


def parse_jwks(data: bytes | str) -> JwkSet:
    """Parse a JWKS document (`{"keys": [...]}`, or a single JWK); raise JwksError if unusable."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwksError(f"JWKS is not JSON: {exc}") from exc
    except RecursionError as exc:  # ([[[[...]]]] past the interpreter's recursion limit)
        raise JwksError("JWKS is not JSON: nested too deeply") from exc
    if isinstance(doc, dict) and "keys" not in doc and "kty" in doc:
        doc = {"keys": [doc]}
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError('JWKS must be an object with a "keys" list')
    keys: list[Jwk] = []
    skipped = 0
    for entry in doc["keys"]:
        try:
            if not isinstance(entry, dict):
                raise ValueError("key is not an object")
            keys.append(_parse_key(entry))
        except (ValueError, TypeError) as exc:
            skipped += 1
            logger.warning("skipping JWKS key", extra={"kid": str(entry)[:40], "error": str(exc)})
    if not keys:
        raise JwksError(f"JWKS has no usable keys ({skipped} skipped)")
    return JwkSet(tuple(keys), skipped)


@dataclass(frozen=True, slots=True)
class JwksConfig:
    """Where a provider's keys come from and how long they are trusted (Envoy remote_jwks)."""

    url: str = ""
    file: str = ""
    inline: str = ""
    cache_s: float = 600.0  # Envoy remote_jwks cache_duration default: 10 min
    timeout_s: float = 2.0  # fetch deadline (Envoy http_uri.timeout)
    min_refetch_interval_s: float = 10.0  # unknown kid: refetch at most this often

    def __post_init__(self) -> None:
        if sum(bool(s) for s in (self.url, self.file, self.inline)) != 1:
            raise ValueError("jwks needs exactly one of url, file, inline")
        if self.url and urlsplit(self.url).scheme != "http":
            raise ValueError(f"jwks url must be http://host[:port]/path, got {self.url!r}")
        if min(self.cache_s, self.timeout_s) <= 0 or self.min_refetch_interval_s < 0:
            raise ValueError("jwks cache_s and timeout_s must be > 0")
        if self.inline:
            parse_jwks(self.inline)  # fail at load time, not on the first request


class JwksSource:
    """A provider's current key set: loaded lazily, cached for `cache_s`, refetched (at most once
    per `min_refetch_interval_s`) when a token names a kid the set lacks (key rotation).

    A failed refresh keeps the previous set; concurrent requests share one fetch.
    """

    def __init__(self, config: JwksConfig, fetch: Fetch | None, clock: Clock = monotonic) -> None:
        if config.url and fetch is None:
            raise ValueError("a JWKS url needs a fetch function")
        self.config = config
        self._fetch = fetch
        self._clock = clock
        self._keys: JwkSet | None = None
        self._loaded_at = 0.0
        self._attempted_at: float | None = None
        self._file_stamp: tuple[int, int] | None = None
        self._inflight: asyncio.Future[JwkSet | None] | None = None
        self.fetches = 0
        self.failures = 0
        self.last_error = ""

    async def keys(self, *, kid_missing: bool = False) -> JwkSet | None:
        """The key set, refreshed when stale (or, with `kid_missing`, when refetch is allowed)."""
        now = self._clock()
        if self._keys is not None and not self._due(now, kid_missing):
            return self._keys
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        if self._keys is None and self._attempted_at is not None:
            if now - self._attempted_at < _RETRY_EMPTY_S:
                return None  # no keys yet and the last try just failed: no fetch storm
        inflight = self._inflight = asyncio.get_running_loop().create_future()
        result = self._keys  # if this caller is cancelled, waiters get the set we had
        try:
            result = await self._refresh(now)
            return result
        finally:
            self._inflight = None
            inflight.set_result(result)

    def _due(self, now: float, kid_missing: bool) -> bool:
        cfg = self.config
        if cfg.inline:
            return False
        if cfg.file:
            return self._stamp() != self._file_stamp
        if now - self._loaded_at >= cfg.cache_s:
            return self._attempted_at is None or now - self._attempted_at >= 1.0
        return kid_missing and (
            self._attempted_at is None or now - self._attempted_at >= cfg.min_refetch_interval_s
        )

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.config.file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    async def _refresh(self, now: float) -> JwkSet | None:
        cfg = self.config
        self._attempted_at = now
        try:
            if cfg.inline:
                data: bytes = cfg.inline.encode()
            elif cfg.file:
                self._file_stamp = self._stamp()
                data = await asyncio.to_thread(Path(cfg.file).read_bytes)
            else:
                assert self._fetch is not None
                self.fetches += 1
                data = await self._fetch(cfg.url, cfg.timeout_s)
            keys = parse_jwks(data)
        except (JwksError, OSError) as exc:
            self.failures += 1
            if str(exc) != self.last_error:
                logger.warning(
                    "JWKS refresh failed", extra={"source": _where(cfg), "error": str(exc)}
                )
            self.last_error = str(exc)
            return self._keys
        if self._keys is None or keys.keys != self._keys.keys:
            logger.info("JWKS loaded", extra={"source": _where(cfg), "keys": len(keys.keys)})
        self._keys, self._loaded_at, self.last_error = keys, now, ""
        return keys

    def stats(self) -> dict[str, object]:
        return {
            "keys": len(self._keys.keys) if self._keys is not None else 0,
            "fetches": self.fetches,
            "failures": self.failures,
            "last_error": self.last_error,
        }


def _where(config: JwksConfig) -> str:
    return config.url or config.file or "inline"


def pool_fetch(pool: Callable[[Request], Awaitable[Response]]) -> Fetch:
    """A Fetch that GETs the JWKS through `pool` (the sidecar's UpstreamPool), with a deadline."""

    async def fetch(url: str, timeout_s: float) -> bytes:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc
        context = RequestContext(direction="outbound", upstream="jwks", connect_timeout_s=timeout_s)
        try:
            context.endpoint = Endpoint(host, port, service="jwks")
            request = Request(
                "GET",
                target,
                headers=(("host", authority), ("accept", "application/json")),
                authority=authority,
                context=context,
            )
            async with asyncio.timeout(timeout_s):
                response = await pool(request)
                body = await read_body(response.body, _MAX_JWKS_BYTES, "JWKS")
        except (ProxyError, TimeoutError, ValueError) as exc:
            raise JwksError(f"fetching {url}: {exc or type(exc).__name__}") from exc
        if response.status != 200:
            raise JwksError(f"fetching {url}: HTTP {response.status}")
        return body

    return fetch
