"""ClickHouse queries of the control plane: policy history, audit log, ACKs, registration events.

Store outages become `Unavailable`; documents are stored as JSON text with sorted keys.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from analytics.controlplane import schema
from analytics.controlplane.errors import Unavailable
from collector.store import Store, StoreUnavailable

__all__ = ["AckRow", "AuditEntry", "ControlPlaneRepository", "InstanceEvent", "PolicyVersion"]


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """One stored version of a service's policy document."""

    service: str
    version: int
    created_at: float
    author: str
    reason: str
    action: str  # "put" or "rollback"
    source_version: int  # for a rollback, the version whose document it restores; else 0
    digest: str
    document: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who changed what, when and why; `details` never holds secrets."""

    ts: float
    id: str
    actor: str
    actor_kind: str
    action: str
    target: str
    reason: str
    details: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AckRow:
    ts: float
    service: str
    instance: str
    version: int
    nonce: str
    ok: bool
    error: str


@dataclass(frozen=True, slots=True)
class InstanceEvent:
    ts: float
    event: str  # "register", "deregister" or "expire"
    namespace: str
    service: str
    instance: str
    address: str
    ports: Mapping[str, int]
    labels: Mapping[str, str]


def _dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _claim(policy: PolicyVersion) -> tuple[str, str, str, str, int]:
    return (policy.digest, policy.author, policy.reason, policy.action, policy.source_version)


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except StoreUnavailable as exc:
        raise Unavailable(f"the store is unavailable: {exc}") from exc


_POLICY_COLUMNS = (
    "service, version, toUnixTimestamp64Milli(created_at) AS created_ms, author, reason, "
    "action, source_version, digest, document"
)


def _policy(row: Mapping[str, Any]) -> PolicyVersion:
    return PolicyVersion(
        service=str(row["service"]),
        version=int(row["version"]),
        created_at=int(row["created_ms"]) / 1000,
        author=str(row["author"]),
        reason=str(row["reason"]),
        action=str(row["action"]),
        source_version=int(row["source_version"]),
        digest=str(row["digest"]),
        document=json.loads(row["document"]),
    )


class ControlPlaneRepository:
    """Reads and writes the control-plane tables of one store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def create_tables(self) -> None:
        async with _translated():
            for ddl in schema.DDL:
                await self._store.command(ddl)

    async def insert_policy(self, policy: PolicyVersion) -> None:
        async with _translated():
            await self._store.insert(
                schema.POLICIES,
                {
                    "service": [policy.service],
                    "version": [policy.version],
                    "created_at": [_dt(policy.created_at)],
                    "author": [policy.author],
                    "reason": [policy.reason],
                    "action": [policy.action],
                    "source_version": [policy.source_version],
                    "digest": [policy.digest],
                    "document": [_json(policy.document)],
                },
                dedup_token=f"policy:{policy.service}:{policy.version}",
            )

    async def claim_policy_version(self, policy: PolicyVersion) -> bool:
        """Compare-and-set: store `policy` unless its (service, version) is taken already.

        The insert's dedup token is the (service, version) pair, so of two writers racing for
        the same version the second insert is dropped by the store; reading the version back
        tells each writer whether its row is the one stored. True when it is.
        """
        await self.insert_policy(policy)
        stored = await self.policy(policy.service, policy.version)
        # Two writers storing the same document with the same author and reason made the same
        # change: either may count as the winner.
        return stored is not None and _claim(stored) == _claim(policy)

    async def policy(self, service: str, version: int | None = None) -> PolicyVersion | None:
        """One version of a service's policy; the latest when `version` is None."""
        where = "service = {service:String}"
        params: dict[str, Any] = {"service": service}
        if version is not None:
            where += " AND version = {version:UInt32}"
            params["version"] = version
        sql = (
            f"SELECT {_POLICY_COLUMNS} FROM {schema.POLICIES} FINAL WHERE {where} "
            "ORDER BY version DESC LIMIT 1"
        )
        async with _translated():
            rows = await self._store.query(sql, params)
        return _policy(rows[0]) if rows else None

    async def history(self, service: str, limit: int) -> list[PolicyVersion]:
        """The newest `limit` versions of a service's policy, newest first."""
        sql = (
            f"SELECT {_POLICY_COLUMNS} FROM {schema.POLICIES} FINAL "
            "WHERE service = {service:String} ORDER BY version DESC LIMIT {limit:UInt32}"
        )
        async with _translated():
            rows = await self._store.query(sql, {"service": service, "limit": limit})
        return [_policy(row) for row in rows]

    async def current_versions(self) -> dict[str, int]:
        """The latest policy version of every service."""
        sql = f"SELECT service, max(version) AS version FROM {schema.POLICIES} GROUP BY service"
        async with _translated():
            rows = await self._store.query(sql)
        return {str(row["service"]): int(row["version"]) for row in rows}

    async def insert_audit(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        async with _translated():
            await self._store.insert(
                schema.AUDIT,
                {
                    "ts": [_dt(e.ts) for e in entries],
                    "id": [e.id for e in entries],
                    "actor": [e.actor for e in entries],
                    "actor_kind": [e.actor_kind for e in entries],
                    "action": [e.action for e in entries],
                    "target": [e.target for e in entries],
                    "reason": [e.reason for e in entries],
                    "details": [_json(e.details) for e in entries],
                },
            )

    async def audit(self, limit: int, target: str | None = None) -> list[AuditEntry]:
        """The newest audit entries (optionally for one target), newest first."""
        where = "" if target is None else "WHERE target = {target:String}"
        sql = (
            "SELECT toUnixTimestamp64Milli(ts) AS ts_ms, id, actor, actor_kind, action, target, "
            f"reason, details FROM {schema.AUDIT} {where} "
            "ORDER BY ts DESC, id DESC LIMIT {limit:UInt32}"
        )
        params: dict[str, Any] = {"limit": limit}
        if target is not None:
            params["target"] = target
        async with _translated():
            rows = await self._store.query(sql, params)
        return [
            AuditEntry(
                ts=int(r["ts_ms"]) / 1000,
                id=str(r["id"]),
                actor=str(r["actor"]),
                actor_kind=str(r["actor_kind"]),
                action=str(r["action"]),
                target=str(r["target"]),
                reason=str(r["reason"]),
                details=json.loads(r["details"]),
            )
            for r in rows
        ]

    async def insert_acks(self, rows: Sequence[AckRow]) -> None:
        if not rows:
            return
        async with _translated():
            await self._store.insert(
                schema.ACKS,
                {
                    "ts": [_dt(r.ts) for r in rows],
                    "service": [r.service for r in rows],
                    "instance": [r.instance for r in rows],
                    "version": [r.version for r in rows],
                    "nonce": [r.nonce for r in rows],
                    "ok": [int(r.ok) for r in rows],
                    "error": [r.error for r in rows],
                },
            )

    async def acks(self, instance: str, limit: int) -> list[AckRow]:
        sql = (
            "SELECT toUnixTimestamp64Milli(ts) AS ts_ms, service, instance, version, nonce, ok, "
            f"error FROM {schema.ACKS} WHERE instance = {{instance:String}} "
            "ORDER BY ts DESC LIMIT {limit:UInt32}"
        )
        async with _translated():
            rows = await self._store.query(sql, {"instance": instance, "limit": limit})
        return [
            AckRow(
                ts=int(r["ts_ms"]) / 1000,
                service=str(r["service"]),
                instance=str(r["instance"]),
                version=int(r["version"]),
                nonce=str(r["nonce"]),
                ok=bool(r["ok"]),
                error=str(r["error"]),
            )
            for r in rows
        ]

    async def insert_instance_events(self, events: Sequence[InstanceEvent]) -> None:
        if not events:
            return
        async with _translated():
            await self._store.insert(
                schema.INSTANCES,
                {
                    "ts": [_dt(e.ts) for e in events],
                    "event": [e.event for e in events],
                    "namespace": [e.namespace for e in events],
                    "service": [e.service for e in events],
                    "instance": [e.instance for e in events],
                    "address": [e.address for e in events],
                    "ports": [_json(e.ports) for e in events],
                    "labels": [_json(e.labels) for e in events],
                },
            )
