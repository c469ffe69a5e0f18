"""The control plane: wires registry, policy store, push hub, CA and audit; owns their tasks.

Plain async code (no FastAPI): the router authenticates, then calls these methods with the
caller's `Principal`; every method checks what that principal may do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from analytics.controlplane.audit import AuditLog
from analytics.controlplane.auth import Authenticator, Principal
from analytics.controlplane.ca import CertificateAuthority, IssuedCertificate
from analytics.controlplane.errors import Forbidden
from analytics.controlplane.identity import SpiffeId
from analytics.controlplane.policies import PolicyStore
from analytics.controlplane.push import Push, PushHub
from analytics.controlplane.registry import InstanceState, Registration, Registry
from analytics.controlplane.repository import AckRow, ControlPlaneRepository, InstanceEvent
from analytics.controlplane.spool import Spool
from analytics.settings import Settings
from collector.store import Store

__all__ = ["ControlPlane", "FleetEntry"]

logger = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]
_SYSTEM = Principal(kind="operator", name="system:lease-expiry")


@dataclass(frozen=True, slots=True)
class FleetEntry:
    """One instance in the fleet view, next to the version it should run."""

    state: InstanceState
    current_version: int

    @property
    def in_sync(self) -> bool:
        return self.state.acked_version == self.current_version


class ControlPlane:
    """The control plane's single entry point for the router and the app lifespan."""

    def __init__(
        self,
        settings: Settings,
        repository: ControlPlaneRepository,
        ca: CertificateAuthority,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        sleep: Sleep,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.ca = ca
        self._wall = wall_clock
        self._sleep = sleep
        self.audit = AuditLog(repository, clock=wall_clock)
        self.registry = Registry(settings.lease_ttl_s, clock=clock, wall_clock=wall_clock)
        self.policies = PolicyStore(
            repository, self.audit, on_change=self._notify, clock=wall_clock
        )
        self.acks: Spool[AckRow] = Spool("acks", repository.insert_acks)
        self.instance_events: Spool[InstanceEvent] = Spool(
            "instances", repository.insert_instance_events
        )
        self.push = PushHub(self.registry, self.policies, ca, self.acks, clock=wall_clock)
        self.auth = Authenticator(
            settings.api_tokens,
            settings.bootstrap_tokens,
            ca,
            skew_s=settings.auth_clock_skew_s,
            clock=wall_clock,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.background_failures = 0

    @classmethod
    async def open(
        cls,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> ControlPlane:
        """Create the tables, open the CA and load the current policies."""
        repository = ControlPlaneRepository(store)
        await repository.create_tables()
        ca = await asyncio.to_thread(
            CertificateAuthority.open,
            settings.data_dir / "ca",
            settings.trust_domain,
            root_ttl_s=settings.root_ttl_s,
            cert_file=settings.ca_cert_file,
            key_file=settings.ca_key_file,
            clock=wall_clock,
        )
        plane = cls(settings, repository, ca, clock=clock, wall_clock=wall_clock, sleep=sleep)
        await plane.policies.refresh()
        return plane

    def start(self) -> None:
        """Start the lease sweeper and the store sync (other replicas' policy writes)."""
        self._tasks = [
            asyncio.create_task(self._every(self.settings.sweep_interval_s, self.sweep)),
            asyncio.create_task(
                self._every(self.settings.store_sync_interval_s, self.policies.refresh)
            ),
        ]

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.push.notify()
        await self.flush()

    async def _every(self, interval_s: float, step: Callable[[], Awaitable[object]]) -> None:
        failing = 0
        while True:
            await self._sleep(interval_s)
            try:
                await step()
            except Exception:
                # Task boundary: a store outage (or a bug in one round) must not stop lease
                # expiry for good; the next round retries. Logged once per outage, counted.
                self.background_failures += 1
                if failing == 0:
                    logger.exception(
                        "control-plane background step failing",
                        extra={"step": getattr(step, "__name__", "step")},
                    )
                failing += 1
                continue
            if failing:
                logger.info(
                    "control-plane background step recovered",
                    extra={"step": getattr(step, "__name__", "step"), "failed_rounds": failing},
                )
                failing = 0

    def _notify(self) -> None:
        self.push.notify()

    async def flush(self) -> None:
        for spool in (self.acks, self.instance_events, self.audit.spool):
            await spool.flush()

    def _event(self, event: str, registration: Registration) -> InstanceEvent:
        return InstanceEvent(
            ts=self._wall(),
            event=event,
            namespace=registration.namespace,
            service=registration.service,
            instance=registration.instance,
            address=registration.address,
            ports=dict(registration.ports),
            labels=dict(registration.labels),
        )

    def register(
        self, actor: Principal, registration: Registration, running_version: int | None = None
    ) -> InstanceState:
        """Register (or re-register after a restart) an instance of the actor's own service."""
        actor.require_workload(registration.namespace, registration.service)
        before = self.registry.revision
        state = self.registry.register(registration)
        if running_version is not None and running_version > 0:
            state = self.registry.record_ack(registration.instance, running_version)
        self.instance_events.add(self._event("register", registration))
        self.audit.record_later(
            actor,
            "instance.register",
            f"instance/{registration.instance}",
            details={"service": registration.service, "address": registration.address},
        )
        if self.registry.revision != before:
            logger.info(
                "instance registered",
                extra={"instance": registration.instance, "service": registration.service},
            )
            self._notify()
        return state

    def _owned(self, actor: Principal, instance: str) -> InstanceState:
        state = self.registry.get(instance)
        actor.require_workload(state.registration.namespace, state.registration.service)
        return state

    def heartbeat(self, actor: Principal, instance: str) -> InstanceState:
        self._owned(actor, instance)
        return self.registry.heartbeat(instance)

    def deregister(self, actor: Principal, instance: str) -> None:
        self._owned(actor, instance)
        registration = self.registry.deregister(instance)
        self.push.forget(instance)
        self.instance_events.add(self._event("deregister", registration))
        self.audit.record_later(
            actor,
            "instance.deregister",
            f"instance/{instance}",
            details={"service": registration.service},
        )
        self._notify()

    async def sweep(self) -> list[Registration]:
        """Expire dead leases (waking watchers whose endpoints changed) and flush spools."""
        gone = self.registry.expire()
        for registration in gone:
            self.push.forget(registration.instance)
            self.instance_events.add(self._event("expire", registration))
            self.audit.record_later(
                _SYSTEM,
                "instance.expire",
                f"instance/{registration.instance}",
                details={"service": registration.service},
            )
        if gone:
            logger.info("instances expired", extra={"instances": [r.instance for r in gone]})
            self._notify()
        await self.flush()
        return gone

    def fleet(self, actor: Principal, service: str | None = None) -> list[FleetEntry]:
        actor.require_reader()
        entries = []
        for state in self.registry.instances(service):
            policy = self.policies.current(state.registration.service)
            entries.append(FleetEntry(state, policy.version if policy else 0))
        return entries

    async def watch(
        self,
        actor: Principal,
        service: str,
        instance: str,
        version: int | None,
        revision: str | None,
        timeout_s: float,
    ) -> Push | None:
        state = self._owned(actor, instance)
        if state.registration.service != service:
            raise Forbidden(f"instance {instance} belongs to {state.registration.service}")
        timeout_s = min(timeout_s, self.settings.max_watch_timeout_s)
        return await self.push.watch(instance, version, revision, timeout_s)

    def ack(
        self, actor: Principal, instance: str, version: int, nonce: str, ok: bool, error: str
    ) -> InstanceState:
        self._owned(actor, instance)
        return self.push.ack(instance, version, nonce, ok, error)

    async def issue_certificate(self, actor: Principal, csr_pem: str) -> IssuedCertificate:
        """Sign a sidecar's CSR for the identity its credential is scoped to."""
        if actor.kind not in ("bootstrap", "workload"):
            raise Forbidden(f"{actor.kind} credentials cannot request workload certificates")
        identity = SpiffeId(self.ca.trust_domain, actor.namespace, actor.service)
        issued = self.ca.issue(csr_pem, identity, self.settings.cert_ttl_s)
        await self.audit.record(
            actor,
            "certificate.issue",
            identity.uri,
            details={
                "serial": issued.serial,
                "not_after": issued.not_after,
                "root": self.ca.active_fingerprint,
            },
        )
        return issued

    async def add_root(self, actor: Principal, reason: str) -> str:
        actor.require_operator()
        fingerprint = await asyncio.to_thread(self.ca.add_root)
        await self.audit.record(
            actor, "trust_bundle.add_root", f"root/{fingerprint}", reason=reason
        )
        self._notify()
        return fingerprint

    async def activate_root(self, actor: Principal, fingerprint: str, reason: str) -> None:
        actor.require_operator()
        self.ca.activate(fingerprint)
        await self.audit.record(
            actor, "trust_bundle.activate", f"root/{fingerprint}", reason=reason
        )
        self._notify()

    async def retire_root(self, actor: Principal, fingerprint: str, reason: str) -> None:
        actor.require_operator()
        self.ca.retire(fingerprint)
        await self.audit.record(actor, "trust_bundle.retire", f"root/{fingerprint}", reason=reason)
        self._notify()
