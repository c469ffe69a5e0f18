"""HTTP layer of policy suggestions: list, detail with counterfactual replay, accept, reject,
roll back, refresh, and policy pins. Errors are control-plane errors (same JSON shape).

A suggestion: `{id, fingerprint, kind, caller, upstream, route, target, state, mode, summary,
change, evidence, confidence, window_start, window_end, created_at, updated_at, rolled_out_at,
policy_version, previous_version, history: [{state, at, actor, reason}], verification}`.
The loop's windows come from `app.state.tuning_options` (a TuningOptions) when set.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from analytics.deps import OperatorDep, ReaderDep
from analytics.tuning.schemas import AcceptBody, PinBody, ReasonBody
from analytics.tuning.service import TuningOptions, TuningService

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["tuning"])

SuggestionId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]
ServiceName = Annotated[str, Path(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")]
_STATES = "^(|proposed|accepted|observing|enforcing|verified|rejected|superseded|rolled_back)$"


async def _service(request: Request) -> TuningService:
    plane = request.app.state.control_plane
    options = getattr(request.app.state, "tuning_options", None) or TuningOptions()
    service = TuningService(
        request.app.state.store,
        plane.policies,
        plane.audit,
        options=options,
        wall_clock=request.app.state.wall_clock,
    )
    await service.ensure_tables()  # idempotent: the API works before the engine's first run
    return service


@router.get("/suggestions")
async def list_suggestions(
    request: Request,
    _: ReaderDep,
    state: Annotated[str, Query(pattern=_STATES)] = "",
    caller: str = "",
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict[str, Any]:
    service = await _service(request)
    rows = await service.suggestions(state=state, caller=caller, limit=limit)
    return {"suggestions": [r.record() for r in rows]}


@router.post("/suggestions/refresh")
async def refresh(request: Request, _: OperatorDep) -> dict[str, Any]:
    """Recompute now (the engine does this every interval)."""
    found = await (await _service(request)).refresh()
    return {
        "suggested": len(found.suggestions),
        "refusals": [
            {"kind": r.kind, **asdict(r.edge), "reason": r.reason, "evidence": dict(r.evidence)}
            for r in found.refusals
        ],
    }


@router.post("/suggestions/verify")
async def verify(request: Request, _: OperatorDep) -> dict[str, Any]:
    """Judge the enforcing rollouts whose after-window has passed now (the engine does this
    every interval); worse ones are rolled back."""
    judged = await (await _service(request)).verify_due()
    return {"judged": [r.record() for r in judged]}


@router.get("/suggestions/{suggestion_id}")
async def get_suggestion(
    request: Request,
    _: ReaderDep,
    suggestion_id: SuggestionId,
    with_replay: bool = True,
) -> dict[str, Any]:
    service = await _service(request)
    rec = await service.get(suggestion_id)
    out = rec.record()
    if with_replay and rec.target != "none":
        out["replay"] = await service.replay(rec)
    return out


@router.post("/suggestions/{suggestion_id}/accept")
async def accept(
    request: Request, principal: OperatorDep, suggestion_id: SuggestionId, body: AcceptBody
) -> dict[str, Any]:
    service = await _service(request)
    return (await service.accept(principal, suggestion_id, body.mode, body.reason)).record()


@router.post("/suggestions/{suggestion_id}/reject")
async def reject(
    request: Request, principal: OperatorDep, suggestion_id: SuggestionId, body: ReasonBody
) -> dict[str, Any]:
    service = await _service(request)
    return (await service.reject(principal, suggestion_id, body.reason)).record()


@router.post("/suggestions/{suggestion_id}/rollback")
async def rollback(
    request: Request, principal: OperatorDep, suggestion_id: SuggestionId, body: ReasonBody
) -> dict[str, Any]:
    service = await _service(request)
    return (await service.rollback(principal, suggestion_id, body.reason)).record()


@router.put("/policies/{service}/pin")
async def pin(
    request: Request, principal: OperatorDep, service: ServiceName, body: PinBody
) -> dict[str, Any]:
    pinned = await (await _service(request)).pin(principal, service, True, body.reason)
    return asdict(pinned)


@router.delete("/policies/{service}/pin")
async def unpin(request: Request, principal: OperatorDep, service: ServiceName) -> dict[str, Any]:
    unpinned = await (await _service(request)).pin(principal, service, False, "")
    return asdict(unpinned)


@router.get("/policies/pins")
async def pins(request: Request, _: ReaderDep) -> dict[str, Any]:
    found = await (await _service(request)).pins()
    return {"pins": [asdict(p) for p in found.values()]}
