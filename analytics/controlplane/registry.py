"""The registry: sidecar instances holding leases (soft state rebuilt from heartbeats, like istiod).

An instance that stops heartbeating leaves the endpoint set when its lease runs out; the clock is
injected so tests move time instead of waiting for it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from analytics.controlplane.errors import NotFound

__all__ = ["Endpoint", "InstanceState", "Nack", "Registration", "Registry"]

Clock = Callable[[], float]
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Registration:
    """What a sidecar announces on start: who it is, where it listens, whom it calls."""

    namespace: str
    service: str
    instance: str
    address: str
    ports: Mapping[str, int]
    labels: Mapping[str, str] = field(default_factory=dict)
    upstreams: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("namespace", "service"):
            if not _LABEL.match(getattr(self, name)):
                problems.append(f"{name} must be a lower-case DNS label")
        if not _INSTANCE.match(self.instance):
            problems.append("instance must be 1-128 of [A-Za-z0-9._:-]")
        if not self.address or len(self.address) > 255:
            problems.append("address must be a host name or IP")
        for port_name, port in self.ports.items():
            if not 1 <= port <= 65535:
                problems.append(f"port {port_name!r} must be 1..65535, got {port}")
        for upstream in self.upstreams:
            if not _LABEL.match(upstream):
                problems.append(f"upstream {upstream!r} must be a lower-case DNS label")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One live instance of a service as pushed to the sidecars that call it."""

    instance: str
    address: str
    ports: Mapping[str, int]
    labels: Mapping[str, str]
    # The workload's SPIFFE id (spiffe://<trust-domain>/ns/<ns>/sa/<service>), the identity a
    # caller verifies over mTLS; "" when no trust domain was given.
    identity: str = ""


@dataclass(frozen=True, slots=True)
class Nack:
    """A version an instance rejected, and why."""

    version: int
    error: str
    at: float


@dataclass(frozen=True, slots=True)
class InstanceState:
    """The fleet view of one instance: registration, lease, and the config versions it runs."""

    registration: Registration
    registered_at: float
    last_seen: float
    lease_expires: float
    acked_version: int | None = None
    acked_at: float | None = None
    nack: Nack | None = None

    def endpoint(self, trust_domain: str = "") -> Endpoint:
        reg = self.registration
        identity = f"spiffe://{trust_domain}/ns/{reg.namespace}/sa/{reg.service}"
        return Endpoint(
            reg.instance,
            reg.address,
            dict(reg.ports),
            dict(reg.labels),
            identity if trust_domain else "",
        )


class Registry:
    """Instances by id with leases; every endpoint-set change bumps `revision`."""

    def __init__(
        self, lease_ttl_s: float, *, clock: Clock = time.monotonic, wall_clock: Clock = time.time
    ) -> None:
        if lease_ttl_s <= 0:
            raise ValueError(f"lease_ttl_s must be > 0, got {lease_ttl_s}")
        self._lease_ttl_s = lease_ttl_s
        self._clock = clock
        self._wall = wall_clock
        self._instances: dict[str, InstanceState] = {}
        self.revision = 0

    def register(self, registration: Registration) -> InstanceState:
        """Add or replace an instance and start its lease."""
        previous = self._instances.get(registration.instance)
        now = self._wall()
        state = InstanceState(
            registration=registration,
            registered_at=now,
            last_seen=now,
            lease_expires=self._clock() + self._lease_ttl_s,
            acked_version=previous.acked_version if previous else None,
            acked_at=previous.acked_at if previous else None,
            nack=previous.nack if previous else None,
        )
        self._instances[registration.instance] = state
        if previous is None or previous.registration != registration:
            self.revision += 1
        return state

    def get(self, instance: str) -> InstanceState:
        state = self._instances.get(instance)
        if state is None or state.lease_expires <= self._clock():
            raise NotFound(f"instance {instance!r} is not registered (register again)")
        return state

    def heartbeat(self, instance: str) -> InstanceState:
        """Renew the lease of a live instance; NotFound once it has expired."""
        state = replace(
            self.get(instance),
            last_seen=self._wall(),
            lease_expires=self._clock() + self._lease_ttl_s,
        )
        self._instances[instance] = state
        return state

    def _stale(self, state: InstanceState, version: int) -> bool:
        # Versions only grow (a rollback is a new version), so a reply about an older version
        # than the one already ACKed arrived late and must not move the fleet view backwards.
        return state.acked_version is not None and version < state.acked_version

    def record_ack(self, instance: str, version: int) -> InstanceState:
        now = self._wall()
        state = replace(self.get(instance), last_seen=now)
        if not self._stale(state, version):
            state = replace(state, acked_version=version, acked_at=now)
            if state.nack is not None and state.nack.version <= version:
                state = replace(state, nack=None)
        self._instances[instance] = state
        return state

    def record_nack(self, instance: str, version: int, error: str) -> InstanceState:
        now = self._wall()
        state = replace(self.get(instance), last_seen=now)
        if not self._stale(state, version):
            state = replace(state, nack=Nack(version, error, now))
        self._instances[instance] = state
        return state

    def deregister(self, instance: str) -> Registration:
        state = self.get(instance)
        del self._instances[instance]
        self.revision += 1
        return state.registration

    def expire(self) -> list[Registration]:
        """Drop every instance whose lease has run out; returns them."""
        now = self._clock()
        gone = [s.registration for s in self._instances.values() if s.lease_expires <= now]
        for registration in gone:
            del self._instances[registration.instance]
        if gone:
            self.revision += 1
        return gone

    def instances(self, service: str | None = None) -> list[InstanceState]:
        """Live instances (optionally of one service), ordered by service then instance id."""
        now = self._clock()
        live = [
            s
            for s in self._instances.values()
            if s.lease_expires > now and (service is None or s.registration.service == service)
        ]
        return sorted(live, key=lambda s: (s.registration.service, s.registration.instance))

    def endpoints(self, service: str, *, trust_domain: str = "") -> list[Endpoint]:
        """Live endpoints of `service`; with `trust_domain`, each carries its SPIFFE id."""
        return [s.endpoint(trust_domain) for s in self.instances(service)]
