"""The audit log: every control-plane state change with who, when, what and why.

Policy, CA and trust-bundle changes are written before the change is acknowledged (durable);
registration churn goes through a spool. Details are checked so a secret can never be logged.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from analytics.controlplane.auth import Principal
from analytics.controlplane.repository import AuditEntry, ControlPlaneRepository
from analytics.controlplane.spool import Spool

__all__ = ["AuditLog"]

# Keys that would carry credentials or key material; refusing them keeps the log secret-free
# even when a caller passes a request body through by mistake.
_FORBIDDEN_KEYS = frozenset(
    {"token", "authorization", "secret", "password", "private_key", "key", "csr", "signature"}
)


# Entry ids sort in creation order within a process even when the clock does not move between
# entries (ms timestamp, then a counter), with random bits so replicas do not collide.
_sequence = itertools.count()


def _entry_id(ts: float) -> str:
    return f"{int(ts * 1000):012x}{next(_sequence) % (1 << 32):08x}{secrets.token_hex(6)}"


def _check_details(details: Mapping[str, Any]) -> None:
    for key, value in details.items():
        if key.lower() in _FORBIDDEN_KEYS:
            raise ValueError(f"audit details must not carry {key!r}")
        if isinstance(value, Mapping):
            _check_details(value)


class AuditLog:
    """Writes audit entries to the store and reads them back."""

    def __init__(
        self,
        repository: ControlPlaneRepository,
        *,
        clock: Callable[[], float] = time.time,
        max_spooled: int = 10_000,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self.spool: Spool[AuditEntry] = Spool(
            "audit", repository.insert_audit, max_rows=max_spooled
        )

    def _entry(
        self,
        actor: Principal,
        action: str,
        target: str,
        reason: str,
        details: Mapping[str, Any],
    ) -> AuditEntry:
        _check_details(details)
        ts = self._clock()
        return AuditEntry(
            ts=ts,
            id=_entry_id(ts),
            actor=actor.name,
            actor_kind=actor.kind,
            action=action,
            target=target,
            reason=reason,
            details=dict(details),
        )

    async def record(
        self,
        actor: Principal,
        action: str,
        target: str,
        *,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Write one entry now; raises Unavailable when the store is away."""
        entry = self._entry(actor, action, target, reason, details or {})
        await self._repository.insert_audit([entry])
        return entry

    def record_later(
        self,
        actor: Principal,
        action: str,
        target: str,
        *,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Queue one entry for the next spool flush (high-rate soft-state events)."""
        entry = self._entry(actor, action, target, reason, details or {})
        self.spool.add(entry)
        return entry

    async def entries(self, limit: int, target: str | None = None) -> list[AuditEntry]:
        await self.spool.flush()
        return await self._repository.audit(limit, target)
