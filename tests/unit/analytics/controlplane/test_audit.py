from __future__ import annotations

from pathlib import Path

import pytest

from analytics.controlplane.audit import AuditLog
from analytics.controlplane.auth import Principal
from analytics.controlplane.repository import ControlPlaneRepository
from collector.store import open_store
from tests.unit.analytics.controlplane.helpers import ManualClock

ALICE = Principal("operator", "token:alice")


async def test_entries_read_back_newest_first_and_secrets_are_refused(tmp_path: Path) -> None:
    store = open_store(f"chdb://{tmp_path}/ch")
    try:
        repository = ControlPlaneRepository(store)
        await repository.create_tables()
        audit = AuditLog(repository, clock=ManualClock(1_800_000_000.0))
        await audit.record(ALICE, "policy.put", "policy/orders", reason="r1", details={"v": 1})
        audit.record_later(ALICE, "instance.register", "instance/o-1")
        with pytest.raises(ValueError, match="token"):
            await audit.record(ALICE, "x", "y", details={"nested": {"token": "abc"}})

        entries = await audit.entries(10)
        only_orders = await audit.entries(10, target="policy/orders")
    finally:
        await store.close()

    assert [(e.action, e.ts) for e in entries] == [
        ("instance.register", 1_800_000_000.0),
        ("policy.put", 1_800_000_000.0),
    ]
    assert [e.details for e in only_orders] == [{"v": 1}]
