"""Config push with xDS semantics: long-poll watches, per-response nonces, ACK/NACK per version.

A watch returns as soon as the service's policy version differs from the one the sidecar has
(unless that version was NACKed by this instance: it keeps its last good one), or when the
endpoints of its upstreams or the trust bundle changed (`revision`); otherwise it times out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from analytics.controlplane.ca import CertificateAuthority
from analytics.controlplane.errors import Conflict, InvalidRequest
from analytics.controlplane.policies import PolicyStore
from analytics.controlplane.registry import Endpoint, InstanceState, Registry
from analytics.controlplane.repository import AckRow
from analytics.controlplane.spool import Spool
from analytics.controlplane.validation import upstreams_of

__all__ = ["Push", "PushHub"]

logger = logging.getLogger(__name__)
_NONCES_KEPT = 8
_MAX_ERROR_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Push:
    """One watch response: the config to run and the resources it depends on."""

    service: str
    version: int  # 0 when the service has no policy yet
    document: Mapping[str, Any] | None
    endpoints: Mapping[str, list[Endpoint]]
    trust_bundle: tuple[str, ...]
    revision: str
    nonce: str


class PushHub:
    """Serves watches and records ACK/NACKs into the registry (fleet view) and the ack log."""

    def __init__(
        self,
        registry: Registry,
        policies: PolicyStore,
        ca: CertificateAuthority,
        acks: Spool[AckRow],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._policies = policies
        self._ca = ca
        self._acks = acks
        self._clock = clock
        self._changed = asyncio.Event()
        self._nonces: dict[str, deque[tuple[str, int]]] = {}

    def notify(self) -> None:
        """Wake every pending watch so it re-checks its state."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def forget(self, instance: str) -> None:
        self._nonces.pop(instance, None)

    def _resources(self, state: InstanceState) -> tuple[dict[str, list[Endpoint]], str]:
        service = state.registration.service
        policy = self._policies.current(service)
        names = set(state.registration.upstreams)
        if policy is not None:
            names.update(upstreams_of(policy.document))
        domain = self._ca.trust_domain
        endpoints = {
            name: self._registry.endpoints(name, trust_domain=domain) for name in sorted(names)
        }
        material = {
            "endpoints": {name: [asdict(e) for e in eps] for name, eps in endpoints.items()},
            "bundle": [root.fingerprint for root in self._ca.roots()],
        }
        canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
        return endpoints, hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def _policy_pending(self, state: InstanceState, version: int | None) -> bool:
        policy = self._policies.current(state.registration.service)
        current = policy.version if policy else 0
        if version == current:
            return False
        # A NACKed version is not re-sent: the sidecar keeps its last good one until a new one.
        return not (state.nack is not None and state.nack.version == current)

    async def watch(
        self, instance: str, version: int | None, revision: str | None, timeout_s: float
    ) -> Push | None:
        """The next push for `instance`, or None when nothing changed within `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            # Take the event before reading state so a change in between still wakes us.
            changed = self._changed
            state = self._registry.heartbeat(instance)
            endpoints, current_revision = self._resources(state)
            if self._policy_pending(state, version) or revision != current_revision:
                return self._push(state, endpoints, current_revision)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return None

    def _push(
        self, state: InstanceState, endpoints: dict[str, list[Endpoint]], revision: str
    ) -> Push:
        service = state.registration.service
        policy = self._policies.current(service)
        version = policy.version if policy else 0
        nonce = secrets.token_urlsafe(12)
        issued = self._nonces.setdefault(state.registration.instance, deque(maxlen=_NONCES_KEPT))
        issued.append((nonce, version))
        return Push(
            service=service,
            version=version,
            # The pushed version is authoritative: stamp it so the sidecar reports the same one.
            document={**policy.document, "version": str(version)} if policy else None,
            endpoints=endpoints,
            trust_bundle=self._ca.trust_bundle(),
            revision=revision,
            nonce=nonce,
        )

    def ack(self, instance: str, version: int, nonce: str, ok: bool, error: str) -> InstanceState:
        """Record an ACK (running `version`) or NACK (rejected `version`, with the reason)."""
        state = self._registry.get(instance)
        issued = dict(self._nonces.get(instance, ()))
        # An unknown nonce (control plane restarted, or another replica served the watch) is
        # accepted; a known nonce must match the version it was sent with.
        if nonce in issued and issued[nonce] != version:
            raise Conflict(f"nonce {nonce} was sent with version {issued[nonce]}, not {version}")
        policy = self._policies.current(state.registration.service)
        if version > (policy.version if policy else 0):
            raise InvalidRequest(f"version {version} was never pushed")
        error = error[:_MAX_ERROR_CHARS]
        if ok:
            state = self._registry.record_ack(instance, version)
        else:
            if not error:
                raise InvalidRequest("a NACK must carry the error")
            state = self._registry.record_nack(instance, version, error)
            logger.warning(
                "config rejected by sidecar",
                extra={
                    "instance": instance,
                    "service": state.registration.service,
                    "version": version,
                    "error": error,
                },
            )
        self._acks.add(
            AckRow(
                ts=self._clock(),
                service=state.registration.service,
                instance=instance,
                version=version,
                nonce=nonce,
                ok=ok,
                error=error,
            )
        )
        return state
