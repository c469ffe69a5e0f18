"""Versioned policy documents: validate, store with history, roll back, diff; cache the current.

Versions per service count up from 1 and are never rewritten; a rollback is a new version that
restores an older document, so watchers always see a version change.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from analytics.controlplane.audit import AuditLog
from analytics.controlplane.auth import Principal
from analytics.controlplane.errors import Conflict, NotFound
from analytics.controlplane.repository import ControlPlaneRepository, PolicyVersion
from analytics.controlplane.validation import validate_policy

__all__ = ["Change", "PolicyStore", "diff_documents", "document_digest"]

logger = logging.getLogger(__name__)

# Version races one write may lose before giving up (each loss means another write succeeded).
_CLAIM_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two documents at a JSON path (`$.a.b`)."""

    path: str
    op: str  # "add", "remove" or "replace"
    old: Any
    new: Any


def document_digest(document: Mapping[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def diff_documents(old: Any, new: Any, path: str = "$") -> list[Change]:
    """Key-by-key differences of two JSON documents; lists compare as whole values."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        changes: list[Change] = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}"
            if key not in new:
                changes.append(Change(sub, "remove", old[key], None))
            elif key not in old:
                changes.append(Change(sub, "add", None, new[key]))
            else:
                changes.extend(diff_documents(old[key], new[key], sub))
        return changes
    return [] if old == new else [Change(path, "replace", old, new)]


class PolicyStore:
    """Policy operations over the repository, with an in-memory copy of each current version."""

    def __init__(
        self,
        repository: ControlPlaneRepository,
        audit: AuditLog,
        *,
        on_change: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repository = repository
        self._audit = audit
        self._on_change = on_change
        self._clock = clock
        self._current: dict[str, PolicyVersion] = {}
        # Serialises version assignment in this process (read max, insert max + 1).
        self._write_lock = asyncio.Lock()

    def current(self, service: str) -> PolicyVersion | None:
        """The cached current version (no store round trip: the watch path uses this)."""
        return self._current.get(service)

    def services(self) -> dict[str, PolicyVersion]:
        return dict(self._current)

    async def refresh(self) -> bool:
        """Reload current versions written by any replica; True when something changed."""
        versions = await self._repository.current_versions()
        changed = False
        for service, version in versions.items():
            cached = self._current.get(service)
            if cached is None or cached.version < version:
                latest = await self._repository.policy(service)
                if latest is not None:
                    self._current[service] = latest
                    changed = True
        if changed:
            self._on_change()
        return changed

    async def put(
        self,
        actor: Principal,
        service: str,
        document: Mapping[str, Any],
        *,
        reason: str,
        expected_version: int | None = None,
    ) -> PolicyVersion:
        """Validate and store a new version (operators only)."""
        actor.require_operator()
        validate_policy(service, document)
        return await self._append(actor, service, document, reason, expected_version, None)

    async def rollback(
        self, actor: Principal, service: str, to_version: int, *, reason: str
    ) -> PolicyVersion:
        """Store a new version carrying the document of `to_version` (operators only)."""
        actor.require_operator()
        target = await self._repository.policy(service, to_version)
        if target is None:
            raise NotFound(f"{service} has no policy version {to_version}")
        return await self._append(actor, service, target.document, reason, None, target)

    async def _append(
        self,
        actor: Principal,
        service: str,
        document: Mapping[str, Any],
        reason: str,
        expected_version: int | None,
        restored: PolicyVersion | None,
    ) -> PolicyVersion:
        async with self._write_lock:
            # The lock serialises this process; the store's compare-and-set on the version
            # decides between replicas (another PolicyStore on the same store). A writer that
            # loses a race without an expected version takes the next number.
            for _ in range(_CLAIM_ATTEMPTS):
                latest = await self._repository.policy(service)
                current = latest.version if latest else 0
                if expected_version is not None and expected_version != current:
                    raise Conflict(
                        f"{service} is at version {current}, not {expected_version}; "
                        "reload and retry"
                    )
                policy = await self._claim(actor, service, document, reason, latest, restored)
                if policy is not None:
                    break
                if expected_version is not None:
                    raise Conflict(
                        f"{service} version {current + 1} was just stored by another writer; "
                        "reload and retry"
                    )
            else:
                raise Conflict(f"{service}: lost {_CLAIM_ATTEMPTS} races for a version number")
            self._current[service] = policy
        logger.info(
            "policy version stored",
            extra={
                "service": service,
                "version": policy.version,
                "action": policy.action,
                "author": actor.name,
            },
        )
        self._on_change()
        return policy

    async def _claim(
        self,
        actor: Principal,
        service: str,
        document: Mapping[str, Any],
        reason: str,
        latest: PolicyVersion | None,
        restored: PolicyVersion | None,
    ) -> PolicyVersion | None:
        """Audit and store version latest + 1; None when another writer stored it first."""
        policy = PolicyVersion(
            service=service,
            version=(latest.version if latest else 0) + 1,
            created_at=self._clock(),
            author=actor.name,
            reason=reason,
            action="put" if restored is None else "rollback",
            source_version=0 if restored is None else restored.version,
            digest=document_digest(document),
            document=document,
        )
        details: dict[str, Any] = {"version": policy.version, "digest": policy.digest}
        if restored is not None:
            details["restored_version"] = restored.version
        if latest is not None:
            details["previous_version"] = latest.version
            details["changes"] = len(diff_documents(latest.document, document))
        # Audit first: a change can then never exist without its audit entry.
        await self._audit.record(
            actor, f"policy.{policy.action}", f"policy/{service}", reason=reason, details=details
        )
        if await self._repository.claim_policy_version(policy):
            return policy
        await self._audit.record(
            actor,
            f"policy.{policy.action}_lost",
            f"policy/{service}",
            reason=reason,
            details={**details, "why": "another writer stored this version first"},
        )
        logger.warning(
            "policy version taken by another writer",
            extra={"service": service, "version": policy.version, "author": actor.name},
        )
        return None

    async def get(self, service: str, version: int | None = None) -> PolicyVersion:
        policy = await self._repository.policy(service, version)
        if policy is None:
            which = "policy" if version is None else f"policy version {version}"
            raise NotFound(f"{service} has no {which}")
        return policy

    async def history(self, service: str, limit: int) -> list[PolicyVersion]:
        return await self._repository.history(service, limit)

    async def diff(self, service: str, from_version: int, to_version: int) -> list[Change]:
        old = await self.get(service, from_version)
        new = await self.get(service, to_version)
        return diff_documents(old.document, new.document)
