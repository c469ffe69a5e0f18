"""The sidecar's control-plane client (analytics/controlplane/PROTOCOL.md).

`ControlPlaneClient` makes the HTTP calls (register, heartbeat, deregister, watch, ack) on the
sidecar's own `UpstreamPool` (no second HTTP stack: the sidecar's RSS budget is 40 MB); every
call has a deadline. `request()` is public so other parts (the certificate call of
sidecar/identity.py) reuse the same connection pool and credentials.

`ControlPlaneSync` is the loop: register, heartbeat every `heartbeat_interval_s` (re-register on
404), long-poll the watch with exponential backoff + jitter while the control plane is away, hand
each update to `apply` and ACK/NACK every new version (xDS semantics: a NACKed version keeps the
last good one running; the reason goes to the control plane's fleet view).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random as _random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from sidecar.control import ApplyResult
from sidecar.errors import ProxyError
from sidecar.http import Endpoint, Headers, Request, RequestContext, read_body
from sidecar.stack import Sleep
from sidecar.upstream import UpstreamPool

__all__ = [
    "API_PREFIX",
    "TLS_MODE_LABEL",
    "TLS_MODE_MESH",
    "ApplyResult",
    "ControlPlaneClient",
    "ControlPlaneError",
    "ControlPlaneSync",
    "ControlPlaneUnavailable",
    "CpResponse",
    "Registration",
    "Signer",
    "WatchUpdate",
    "endpoints_from_watch",
    "wait_synced",
]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1/controlplane"
# Istio's auto-mTLS label: a sidecar that accepts mTLS (--mtls permissive|strict) registers it,
# and callers holding credentials use mTLS only towards endpoints carrying it.
TLS_MODE_LABEL = "security.istio.io/tlsMode"
TLS_MODE_MESH = "istio"
MAX_RESPONSE_BYTES = 8 * 1024 * 1024

# (method, target as sent, body) -> credential headers; replaces the bearer token once the
# sidecar holds a workload certificate (PROTOCOL.md "Credentials"), until it has expired (no
# headers: the bearer token is sent again).
Signer = Callable[[str, str, bytes], Headers]


class ControlPlaneError(Exception):
    """The control plane answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"control plane {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class ControlPlaneUnavailable(Exception):
    """The control plane could not be reached or did not answer within the deadline."""


@dataclass(frozen=True, slots=True)
class CpResponse:
    status: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        """The body as JSON (None if empty); ValueError when it is not JSON we can read."""
        try:
            return json.loads(self.body) if self.body else None
        except RecursionError as exc:  # (nested past the interpreter's limit)
            raise ValueError("JSON nested too deeply") from exc


@dataclass(frozen=True, slots=True)
class Registration:
    """What this sidecar registers (POST /instances)."""

    service: str
    instance: str
    address: str
    namespace: str = "default"
    ports: Mapping[str, int] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    def body(self, upstreams: list[str], running_version: int | None) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "service": self.service,
            "instance": self.instance,
            "address": self.address,
            "ports": dict(self.ports),
            "labels": dict(self.labels),
            "upstreams": upstreams,
            "running_version": running_version,
        }


@dataclass(frozen=True, slots=True)
class WatchUpdate:
    """One 200 answer of GET /watch."""

    service: str
    version: int
    document: Mapping[str, Any] | None
    endpoints: dict[str, tuple[Endpoint, ...]]
    revision: str
    nonce: str
    trust_bundle: tuple[str, ...] = ()


def _port_of(ports: Mapping[str, Any]) -> int | None:
    # Callers reach an instance through its sidecar's inbound listener.
    for name in ("inbound", "http"):
        value = ports.get(name)
        if isinstance(value, int):
            return value
    for value in ports.values():
        if isinstance(value, int):
            return value
    return None


def endpoints_from_watch(
    raw: Mapping[str, Any], *, mtls: bool = False
) -> dict[str, tuple[Endpoint, ...]]:
    """Watch `endpoints` ({upstream: [{instance, address, ports, labels, identity}]}) as Endpoints.

    With `mtls` (this sidecar holds mesh credentials), an endpoint labelled as an mTLS workload
    (TLS_MODE_LABEL) keeps its SPIFFE `identity`, so the pool reaches it over mTLS and verifies
    that id; otherwise identity stays "" and the call is plaintext (permissive peers accept it).
    """
    table: dict[str, tuple[Endpoint, ...]] = {}
    for service, entries in raw.items():
        out: list[Endpoint] = []
        for entry in entries if isinstance(entries, list) else ():
            try:
                port = _port_of(entry.get("ports") or {})
                if port is None:
                    raise ValueError("no port")
                labels = entry.get("labels") or {}
                mesh = mtls and labels.get(TLS_MODE_LABEL) == TLS_MODE_MESH
                out.append(
                    Endpoint(
                        str(entry["address"]),
                        port,
                        service=service,
                        instance=str(entry.get("instance", "")),
                        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
                        identity=str(entry.get("identity") or "") if mesh else "",
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                logger.warning(
                    "ignoring a bad endpoint from the control plane",
                    extra={"upstream": service, "error": str(exc)},
                )
        table[str(service)] = tuple(out)
    return table


class ControlPlaneClient:
    """HTTP calls to the control plane on the sidecar's own pool; each with a deadline."""

    def __init__(
        self,
        url: str,
        *,
        pool: UpstreamPool,
        bootstrap_token: str | None = None,
        timeout_s: float = 5.0,
        mtls: bool = False,
    ) -> None:
        """`mtls`: this sidecar holds mesh credentials (watch endpoints keep their identity)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"control plane URL must be http://host[:port], got {url!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.url = url.rstrip("/")
        self._endpoint = Endpoint(parts.hostname, parts.port or 80, service="meshlens-controlplane")
        self._authority = parts.netloc
        self._base = parts.path.rstrip("/")
        self._pool = pool
        self._token = bootstrap_token
        self._timeout_s = timeout_s
        self._mtls = mtls
        self.signer: Signer | None = None  # set once a workload certificate is held

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Headers = (),
        *,
        timeout_s: float | None = None,
    ) -> CpResponse:
        """One call: `path` is under the API prefix (e.g. "/certificates"); `body` is JSON.

        Raises ControlPlaneUnavailable (unreachable, deadline passed, broken answer); any
        status is returned as is (see `call` for the raising variant).
        """
        target = self._base + API_PREFIX + path
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head: list[tuple[str, str]] = [("accept", "application/json")]
        if payload:
            head.append(("content-type", "application/json"))
        # A signer returns nothing once its certificate expired: the bootstrap token renews it.
        signed = self.signer(method, target, payload) if self.signer is not None else ()
        if signed:
            head.extend(signed)
        elif self._token:
            head.append(("authorization", f"Bearer {self._token}"))
        head.extend(headers)
        deadline = self._timeout_s if timeout_s is None else timeout_s
        context = RequestContext(direction="control", endpoint=self._endpoint)
        context.connect_timeout_s = min(deadline, 5.0)
        request = Request(
            method, target, tuple(head), payload, authority=self._authority, context=context
        )
        try:
            async with asyncio.timeout(deadline):
                response = await self._pool(request)
                data = await read_body(response.body, MAX_RESPONSE_BYTES, "answer")
        except TimeoutError as exc:
            raise ControlPlaneUnavailable(
                f"{method} {path}: no answer within {deadline:g}s"
            ) from exc
        except ProxyError as exc:
            raise ControlPlaneUnavailable(f"{method} {path}: {exc}") from exc
        return CpResponse(response.status, response.headers, data)

    async def call(
        self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> CpResponse:
        """`request`, raising ControlPlaneError for a 4xx/5xx answer."""
        response = await self.request(method, path, body, timeout_s=timeout_s)
        if response.status >= 400:
            reason, message = "http_error", response.body[:500].decode("utf-8", "replace")
            with contextlib.suppress(ValueError):
                doc = response.json()
                if isinstance(doc, dict):
                    reason = str(doc.get("error", reason))
                    message = str(doc.get("message", message))
                    problems = doc.get("problems")
                    if isinstance(problems, list) and problems:
                        message += ": " + "; ".join(map(str, problems))
            raise ControlPlaneError(response.status, reason, message)
        return response

    async def register(
        self, registration: Registration, upstreams: list[str], running_version: int | None
    ) -> dict[str, Any]:
        response = await self.call(
            "POST", "/instances", registration.body(upstreams, running_version)
        )
        try:
            view = response.json()
        except ValueError as exc:
            raise ControlPlaneUnavailable(f"malformed register answer: {exc}") from exc
        if not isinstance(view, dict):
            raise ControlPlaneUnavailable(
                f"malformed register answer: a JSON {type(view).__name__}, not an object"
            )
        return view

    async def heartbeat(self, instance: str) -> bool:
        """False when the lease is gone (404: register again)."""
        try:
            await self.call("POST", f"/instances/{quote(instance, safe='')}/heartbeat")
        except ControlPlaneError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def deregister(self, instance: str) -> None:
        try:
            await self.call("DELETE", f"/instances/{quote(instance, safe='')}")
        except ControlPlaneError as exc:
            if exc.status != 404:
                raise

    async def watch(
        self,
        service: str,
        instance: str,
        version: int | None,
        revision: str | None,
        timeout_s: float,
    ) -> WatchUpdate | None:
        """Long poll; None when nothing changed within `timeout_s` (204)."""
        query: dict[str, Any] = {"service": service, "instance": instance, "timeout_s": timeout_s}
        if version is not None:
            query["version"] = version
        if revision is not None:
            query["revision"] = revision
        response = await self.call(
            "GET", "/watch?" + urlencode(query), timeout_s=timeout_s + self._timeout_s
        )
        if response.status == 204:
            return None
        try:
            doc = response.json()
            document = doc["document"]
            return WatchUpdate(
                service=str(doc["service"]),
                version=int(doc["version"]),
                document=document if isinstance(document, dict) else None,
                endpoints=endpoints_from_watch(doc.get("endpoints") or {}, mtls=self._mtls),
                revision=str(doc["revision"]),
                nonce=str(doc["nonce"]),
                trust_bundle=tuple(doc.get("trust_bundle") or ()),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ControlPlaneUnavailable(f"malformed watch answer: {exc}") from exc

    async def ack(self, instance: str, version: int, nonce: str, ok: bool, error: str = "") -> None:
        body: dict[str, Any] = {"instance": instance, "version": version, "nonce": nonce, "ok": ok}
        if not ok:
            body["error"] = error[:8000]
        await self.call("POST", "/ack", body)


class ControlPlaneSync:
    """Owns the register / heartbeat / watch loops of one sidecar (start() ... stop())."""

    def __init__(
        self,
        client: ControlPlaneClient,
        registration: Registration,
        *,
        apply: Callable[[WatchUpdate, bool], ApplyResult],
        running_version: Callable[[], int | None] = lambda: None,
        upstreams: Callable[[], list[str]] = list,
        watch_timeout_s: float = 30.0,
        heartbeat_interval_s: float = 2.0,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 5.0,
        sleep: Sleep = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.client = client
        self.registration = registration
        self._apply = apply
        self._running_version = running_version
        self._upstreams = upstreams
        self._watch_timeout_s = watch_timeout_s
        self._heartbeat_configured_s = heartbeat_interval_s
        self._heartbeat_s = heartbeat_interval_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._random = random
        self._tasks: list[asyncio.Task[None]] = []
        self._registered = False
        # After (re-)registering, ask for the full state once and answer it with the result
        # for that version: a restarted control plane learns what this sidecar runs.
        self._resync = False
        self._result: ApplyResult | None = None  # of `version`
        self._register_lock = asyncio.Lock()
        self.version: int | None = None  # last version received (applied or rejected)
        self.revision: str | None = None
        self.synced = asyncio.Event()  # set after the first update was handled
        self.connected = False
        self.last_error: str | None = None
        self.updates = 0
        self.acks = 0
        self.nacks = 0

    def backoff_s(self, failures: int) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2.0 ** max(0, failures - 1))
        return ceiling / 2 + self._random() * ceiling / 2

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._watch_loop(), name="cp-watch"),
            asyncio.create_task(self._heartbeat_loop(), name="cp-heartbeat"),
        ]

    async def stop(self, *, deregister: bool) -> None:
        """Cancel the loops; with `deregister`, leave the endpoint set at once (drain)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if deregister and self._registered:
            try:
                await self.client.deregister(self.registration.instance)
                self._registered = False
            except (ControlPlaneError, ControlPlaneUnavailable) as exc:
                logger.warning("deregister failed", extra={"error": str(exc)})

    def status(self) -> dict[str, Any]:
        return {
            "url": self.client.url,
            "connected": self.connected,
            "registered": self._registered,
            "version": self.version,
            "revision": self.revision,
            "updates": self.updates,
            "acks": self.acks,
            "nacks": self.nacks,
            "last_error": self.last_error,
        }

    async def _register(self) -> None:
        async with self._register_lock:
            if self._registered:
                return
            view = await self.client.register(
                self.registration, self._upstreams(), self._running_version()
            )
            lease = view.get("lease_ttl_s")
            if isinstance(lease, int | float) and lease > 0:
                # PROTOCOL.md: heartbeat every lease_ttl_s / 3
                self._heartbeat_s = min(self._heartbeat_configured_s, lease / 3)
            self._registered = True
            self._resync = True
            logger.info(
                "registered with the control plane",
                extra={"instance": self.registration.instance, "url": self.client.url},
            )

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._sleep(self._heartbeat_s)
            if not self._registered:
                continue  # the watch loop registers (and backs off) while it is away
            try:
                if not await self.client.heartbeat(self.registration.instance):
                    self._registered = False
                    await self._register()
            except (ControlPlaneError, ControlPlaneUnavailable) as exc:
                logger.warning("heartbeat failed", extra={"error": str(exc)})
            except Exception:
                # The lease depends on this loop: a bug here must not end it (it did, on an
                # odd register answer, and the lease then lapsed over and over).
                logger.exception("control-plane heartbeat loop error")

    async def _watch_loop(self) -> None:
        failures = 0
        while True:
            try:
                await self._register()
                update = await self.client.watch(
                    self.registration.service,
                    self.registration.instance,
                    None if self._resync else self.version,
                    None if self._resync else self.revision,
                    self._watch_timeout_s,
                )
                if not self.connected:
                    logger.info("control plane connected", extra={"url": self.client.url})
                self.connected = True
                failures = 0
                if update is not None:
                    await self._handle(update)
            except ControlPlaneError as exc:
                if exc.status == 404:
                    self._registered = False  # lease gone (or control plane restarted)
                failures += 1
                await self._failed(exc, failures)
            except ControlPlaneUnavailable as exc:
                self._registered = False  # it may have lost us while away: register again
                failures += 1
                await self._failed(exc, failures)
            except Exception as exc:
                # The loop owns the sidecar's link to the control plane: never let it die.
                logger.exception("control-plane watch loop error")
                failures += 1
                await self._failed(exc, failures)

    async def _failed(self, exc: Exception, failures: int) -> None:
        if self.connected or failures == 1:
            logger.warning(
                "control plane unavailable; keeping the last good config",
                extra={"error": str(exc), "url": self.client.url},
            )
        self.connected = False
        self.last_error = str(exc)
        await self._sleep(self.backoff_s(failures))

    async def _handle(self, update: WatchUpdate) -> None:
        resync, self._resync = self._resync, False
        new_version = update.version != self.version or self._result is None
        try:
            result = self._apply(update, new_version)
        except Exception as exc:
            logger.exception("applying a control-plane update failed")
            result = ApplyResult(False, (f"sidecar failed to apply the update: {exc!r}",))
        self.updates += 1
        self.revision = update.revision
        if new_version:
            self._result = result
        if new_version or resync:
            assert self._result is not None
            result = self._result
            self.version = update.version
            await self.client.ack(
                self.registration.instance,
                update.version,
                update.nonce,
                result.ok,
                "; ".join(result.errors),
            )
            if result.ok:
                self.acks += 1
            else:
                self.nacks += 1
        self.synced.set()


async def wait_synced(sync: ControlPlaneSync, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for the first update; False if it did not come."""
    try:
        async with asyncio.timeout(timeout_s):
            await sync.synced.wait()
    except TimeoutError:
        return False
    return True
