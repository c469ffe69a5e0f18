"""Verification after rollout on the real store and control plane: a rollout that made the edge
worse is rolled back automatically (audited), one that helped is verified; the engine runs it."""

from __future__ import annotations

import asyncio

from analytics.controlplane.auth import Principal
from analytics.tuning.engine import TuningEngine
from analytics.tuning.service import TuningOptions, TuningService
from collector.store import Store
from tests.conftest import trace_columns
from tests.unit.analytics.controlplane.helpers import Harness
from tests.unit.analytics.tuning.traffic import T0, Edge, spans, spread_503, traffic

OPTIONS = TuningOptions(window_s=600, settle_s=0, verify_window_s=300)
ALICE = Principal(kind="operator", name="alice")


async def _rolled_out(h: Harness, store: Store) -> tuple[TuningService, str]:
    await store.insert("otel_traces", trace_columns(spans(traffic(Edge(), fails=spread_503(0.03)))))
    service = TuningService(
        store, h.plane.policies, h.plane.audit, options=OPTIONS, wall_clock=h.wall
    )
    await service.ensure_tables()
    await service.refresh()
    (retry,) = [s for s in await service.suggestions(state="proposed") if s.kind == "retry"]
    await service.accept(ALICE, retry.id, "enforce", "go")
    return service, retry.id


async def _after(store: Store, **kwargs: object) -> None:
    after = traffic(Edge(), start_s=T0 + 600, seconds=300, seed=3, **kwargs)  # type: ignore[arg-type]
    await store.insert("otel_traces", trace_columns(spans(after)))


async def test_a_rollout_that_made_things_worse_is_rolled_back(
    harness: Harness, store: Store
) -> None:
    h = harness
    service, sid = await _rolled_out(h, store)
    slow = lambda rng, e, t: rng.uniform(300, 400)  # noqa: E731
    await _after(store, fails=spread_503(0.3), latency_ms=slow)

    h.wall.advance(299)
    assert await service.verify_due() == []  # the after-window has not passed yet
    h.wall.advance(1)
    (judged,) = await service.verify_due()

    assert judged.state == "rolled_back"
    assert judged.verification["outcome"] == "worse"
    assert judged.history[-1]["actor"] == "system:tuning"
    assert judged.history[-1]["reason"].startswith("automatic: error rate")
    policy = h.plane.policies.current("web")
    assert policy is not None and policy.version == 2 and policy.document["routes"] == []
    entries = await h.plane.audit.entries(50, f"suggestion/{sid}")
    assert "suggestion.rolled_back" in [e.action for e in entries]


async def test_a_rollout_that_helped_is_verified(harness: Harness, store: Store) -> None:
    h = harness
    service, _ = await _rolled_out(h, store)
    await _after(store)  # no failures any more

    h.wall.advance(300)
    (judged,) = await service.verify_due()
    assert judged.state == "verified"
    assert judged.verification["outcome"] == "better"
    assert judged.verification["after"]["error_rate"] == 0
    assert h.plane.policies.current("web").version == 1  # type: ignore[union-attr]


async def test_the_engine_proposes_from_the_store(harness: Harness, store: Store) -> None:
    h = harness
    await store.insert("otel_traces", trace_columns(spans(traffic(Edge(), fails=spread_503(0.03)))))
    engine = TuningEngine(store, options=OPTIONS, wall_clock=h.wall, sleep=_never)
    await engine.start()
    try:
        await engine.run_once()
    finally:
        await engine.shutdown()
    kinds = {s.kind for s in await engine.service.suggestions(state="proposed")}
    assert {"retry", "outlier"} <= kinds
    assert engine.failures == 0


async def _never(seconds: float) -> None:
    await asyncio.Event().wait()
