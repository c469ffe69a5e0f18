from __future__ import annotations

import asyncio
from typing import Any

from analytics.controlplane.audit import AuditLog
from analytics.controlplane.auth import Principal
from analytics.controlplane.errors import Conflict
from analytics.controlplane.policies import Change, PolicyStore, diff_documents, document_digest
from analytics.controlplane.repository import ControlPlaneRepository
from collector.store import Store

OPERATOR = Principal("operator", "token:alice")
TUNING = Principal("operator", "system:tuning")


def test_diff_reports_adds_removes_and_nested_replacements() -> None:
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "gone": True}
    new = {"a": 1, "b": {"c": 3, "d": [1, 2, 3]}, "new": "x"}
    assert diff_documents(old, new) == [
        Change("$.b.c", "replace", 2, 3),
        Change("$.b.d", "replace", [1, 2], [1, 2, 3]),
        Change("$.gone", "remove", True, None),
        Change("$.new", "add", None, "x"),
    ]
    assert diff_documents(new, new) == []


def test_digest_ignores_key_order() -> None:
    assert document_digest({"a": 1, "b": 2}) == document_digest({"b": 2, "a": 1})
    assert document_digest({"a": 1}) != document_digest({"a": 2})


# Two PolicyStores on one store: the control plane and the tuning engine (another replica).


def _policy_store(store: Store) -> PolicyStore:
    repository = ControlPlaneRepository(store)
    return PolicyStore(repository, AuditLog(repository, clock=lambda: 1000.0), on_change=_nothing)


def _nothing() -> None:
    return None


def _doc(connect_s: float) -> dict[str, Any]:
    return {"service": "web", "upstreams": {"api": {"connect_timeout_s": connect_s}}}


async def test_two_concurrent_writers_get_distinct_versions_and_nothing_is_lost(
    store: Store,
) -> None:
    operator, engine = _policy_store(store), _policy_store(store)
    await ControlPlaneRepository(store).create_tables()
    await operator.put(OPERATOR, "web", _doc(1), reason="first")

    written = await asyncio.gather(
        operator.put(OPERATOR, "web", _doc(2), reason="operator"),
        engine.put(TUNING, "web", _doc(3), reason="tuning"),
    )

    assert sorted(p.version for p in written) == [2, 3]
    history = await operator.history("web", 10)
    assert [p.version for p in history] == [3, 2, 1]
    stored = {p.reason: p.document for p in history}
    assert stored["operator"] == _doc(2) and stored["tuning"] == _doc(3)
    audit = await AuditLog(ControlPlaneRepository(store)).entries(50)
    lost = [e for e in audit if e.action == "policy.put_lost"]
    assert len(lost) == 1 and lost[0].details["version"] == 2


async def test_a_writer_expecting_a_version_taken_concurrently_gets_a_conflict(
    store: Store,
) -> None:
    operator, engine = _policy_store(store), _policy_store(store)
    await ControlPlaneRepository(store).create_tables()
    await operator.put(OPERATOR, "web", _doc(1), reason="first")

    results = await asyncio.gather(
        operator.put(OPERATOR, "web", _doc(2), reason="operator", expected_version=1),
        engine.put(TUNING, "web", _doc(3), reason="tuning", expected_version=1),
        return_exceptions=True,
    )

    stored = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(stored) == 1 and stored[0].version == 2
    assert len(refused) == 1 and isinstance(refused[0], Conflict)
    latest = await engine.get("web")
    assert latest.version == 2 and latest.reason == stored[0].reason
