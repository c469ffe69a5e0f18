"""Mesh TLS: TLS 1.3 contexts from the sidecar's credentials, peers' SPIFFE ids, the mTLS listener.

The inbound listener accepts itself so that every new handshake uses the *current* server context
(rotation swaps it without touching live connections) and, in permissive mode, peeks the first byte
to tell a TLS ClientHello (0x16) from plaintext HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MODES",
    "Credentials",
    "MtlsMode",
    "ProtocolFactory",
    "TlsContexts",
    "TlsListener",
    "client_context",
    "peer_identity",
    "server_context",
    "spiffe_id_of",
]

logger = logging.getLogger(__name__)

MtlsMode = Literal["strict", "permissive", "off"]
MODES: tuple[str, ...] = ("strict", "permissive", "off")
_TLS_HANDSHAKE = 0x16  # first byte of a TLS record carrying a handshake (the ClientHello)
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


@dataclass(frozen=True, slots=True)
class Credentials:
    """The sidecar's certificate chain (leaf first), its private key and the trust bundle (PEM)."""

    cert_chain_pem: str
    key_pem: str = field(repr=False)
    trust_bundle_pem: str
    spiffe_id: str
    not_before: float
    not_after: float

    def __post_init__(self) -> None:
        if "BEGIN CERTIFICATE" not in self.cert_chain_pem:
            raise ValueError("cert_chain_pem holds no PEM certificate")
        if "PRIVATE KEY" not in self.key_pem:
            raise ValueError("key_pem holds no PEM private key")
        if "BEGIN CERTIFICATE" not in self.trust_bundle_pem:
            raise ValueError("trust_bundle_pem holds no PEM certificate")
        if not self.spiffe_id.startswith("spiffe://"):
            raise ValueError(f"spiffe_id must be a spiffe:// URI, got {self.spiffe_id!r}")
        if self.not_after <= self.not_before:
            raise ValueError("not_after must be after not_before")


def _load_chain(context: ssl.SSLContext, credentials: Credentials) -> None:
    # ssl only loads a key from a file: a private 0700 directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="meshlens-tls-") as directory:
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        with open(cert_path, "w") as handle:
            handle.write(credentials.cert_chain_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(credentials.key_pem)
        context.load_cert_chain(cert_path, key_path)


def server_context(credentials: Credentials, mode: MtlsMode) -> ssl.SSLContext:
    """Inbound: TLS 1.3 only; a client certificate is required (strict) or optional (permissive)."""
    if mode == "off":
        raise ValueError("mode off has no server context")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED if mode == "strict" else ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=credentials.trust_bundle_pem)
    _load_chain(context, credentials)
    # ALPN h2 for clients that ask; either way the codec detects the HTTP/2 preface itself
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def client_context(credentials: Credentials) -> ssl.SSLContext:
    """Outbound: TLS 1.3, presents our certificate; the SPIFFE id is checked, not a hostname."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = (
        False  # mesh peers are named by SPIFFE id (checked after the handshake)
    )
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=credentials.trust_bundle_pem)
    _load_chain(context, credentials)
    return context


def spiffe_id_of(peercert: dict[str, Any] | None) -> str:
    """The single spiffe:// URI SAN of a verified peer certificate (`getpeercert()`), else ""."""
    if not peercert:
        return ""
    uris = [v for k, v in peercert.get("subjectAltName", ()) if k == "URI"]
    if len(uris) != 1 or not str(uris[0]).startswith("spiffe://"):
        return ""
    return str(uris[0])


def peer_identity(ssl_object: ssl.SSLObject | None) -> str:
    """The verified SPIFFE id of the peer of a TLS connection ("" without TLS or certificate)."""
    if ssl_object is None:
        return ""
    return spiffe_id_of(ssl_object.getpeercert())


def trust_domain_of(spiffe_id: str) -> str:
    """`example.org` for `spiffe://example.org/ns/x/sa/y`."""
    rest = spiffe_id.removeprefix("spiffe://")
    return rest.split("/", 1)[0] if rest != spiffe_id else ""


class TlsContexts:
    """The current server and client contexts; `update()` swaps both (rotation, new bundle)."""

    def __init__(self, mode: MtlsMode) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode: MtlsMode = mode
        self.credentials: Credentials | None = None
        self._server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None
        self.updates = 0

    def update(self, credentials: Credentials) -> None:
        """New contexts for `credentials`: new handshakes use them, live connections keep theirs."""
        server = server_context(credentials, _listener_mode(self.mode))
        client = client_context(credentials)
        self._server, self._client, self.credentials = server, client, credentials
        self.updates += 1
        logger.info(
            "tls credentials applied",
            extra={"spiffe_id": credentials.spiffe_id, "not_after": credentials.not_after},
        )

    def set_mode(self, mode: MtlsMode) -> None:
        """Switch strict / permissive (/ off: plaintext and TLS without identity) for new conns."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == self.mode:
            return
        if self.credentials is not None:
            self._server = server_context(self.credentials, _listener_mode(mode))
        self.mode = mode
        logger.info("mtls mode changed", extra={"mode": mode})

    def server(self) -> ssl.SSLContext | None:
        return self._server

    def client(self) -> ssl.SSLContext | None:
        return self._client


def _listener_mode(mode: MtlsMode) -> MtlsMode:
    # A TLS listener switched to "off" still completes TLS handshakes, without requiring a cert.
    return "strict" if mode == "strict" else "permissive"


class _Gate(asyncio.Protocol):
    """Checks the verified peer identity after the handshake, then hands the transport over."""

    def __init__(self, listener: TlsListener, inner: asyncio.BaseProtocol) -> None:
        self._listener = listener
        self._inner = inner

    def connection_made(self, transport: Any) -> None:
        identity = peer_identity(transport.get_extra_info("ssl_object"))
        problem = self._listener.refuse_reason(identity, tls=True)
        if problem:
            self._listener.refused(problem)
            transport.abort()
            return
        self._inner.peer_identity = identity  # type: ignore[attr-defined]
        transport.set_protocol(self._inner)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        return None


class TlsListener(asyncio.AbstractServer):
    """An inbound listener speaking mTLS (strict) or mTLS and plaintext (permissive)."""

    def __init__(
        self,
        contexts: TlsContexts,
        factory: ProtocolFactory,
        *,
        trust_domain: str,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        self._contexts = contexts
        self._factory = factory
        self._trust_domain = trust_domain
        self._handshake_timeout_s = handshake_timeout_s
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.refusals: dict[str, int] = {}

    @classmethod
    def listen(
        cls, contexts: TlsContexts, *, trust_domain: str, handshake_timeout_s: float = 10.0
    ) -> Callable[[ProtocolFactory, str, int], Awaitable[TlsListener]]:
        """A `listen` function for `HttpServer.start(listen=...)`."""

        async def start(factory: ProtocolFactory, host: str, port: int) -> TlsListener:
            listener = cls(
                contexts,
                factory,
                trust_domain=trust_domain,
                handshake_timeout_s=handshake_timeout_s,
            )
            listener.start(host, port)
            return listener

        return start

    def start(self, host: str, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = socket.create_server((host, port), backlog=1024)
        self._sock.setblocking(False)
        self._accepting = self._loop.create_task(self._accept_loop(), name="mtls-accept")

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,) if self._sock is not None else ()

    def refuse_reason(self, identity: str, *, tls: bool) -> str:
        """Why a connection is refused ("" when accepted)."""
        if not tls:
            return "plaintext" if self._contexts.mode == "strict" else ""
        if not identity:
            return "no_identity" if self._contexts.mode == "strict" else ""
        if trust_domain_of(identity) != self._trust_domain:
            return "foreign_trust_domain"
        return ""

    def refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        logger.debug("inbound connection refused", extra={"reason": reason})

    async def _accept_loop(self) -> None:
        assert self._loop is not None and self._sock is not None
        while True:
            try:
                conn, _ = await self._loop.sock_accept(self._sock)
            except OSError as exc:  # e.g. EMFILE: keep listening once descriptors free up
                self.refused("accept_failed")
                logger.warning("inbound accept failed", extra={"error": str(exc)})
                await asyncio.sleep(0.1)
                continue
            task = self._loop.create_task(self._serve(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket) -> None:
        handed = False  # once the loop owns the socket, only its transport may close it
        try:
            async with asyncio.timeout(self._handshake_timeout_s):
                first = await self._peek(conn)
                tls = bool(first) and first[0] == _TLS_HANDSHAKE
                context = self._contexts.server() if tls else None
                problem = self.refuse_reason("", tls=False) if first and not tls else ""
                if not first or problem or (tls and context is None):
                    self.refused(problem or ("closed" if not first else "no_credentials"))
                    conn.close()
                    return
                handed = True
                if context is None:
                    await self._loop_().connect_accepted_socket(self._factory, conn)
                    return
                await self._loop_().connect_accepted_socket(
                    lambda: _Gate(self, self._factory()),
                    conn,
                    ssl=context,
                    ssl_handshake_timeout=self._handshake_timeout_s,
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.refused("handshake_failed")
            logger.debug("mtls handshake failed", extra={"error": str(exc)})
            if not handed:
                conn.close()

    async def _peek(self, conn: socket.socket) -> bytes:
        loop = self._loop_()
        ready: asyncio.Future[None] = loop.create_future()
        fd = conn.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        return conn.recv(1, socket.MSG_PEEK)

    def _loop_(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    # -- asyncio.AbstractServer -------------------------------------------------------------

    def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        for task in list(self._pending):
            task.cancel()
        if self._sock is not None:
            self._sock.close()

    async def wait_closed(self) -> None:
        tasks = [t for t in (self._accepting, *self._pending) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._accepting = None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop_()

    def is_serving(self) -> bool:
        return self._accepting is not None and not self._accepting.done()

    async def start_serving(self) -> None:
        return None

    async def serve_forever(self) -> None:
        if self._accepting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
