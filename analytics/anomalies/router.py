"""HTTP layer of incidents: GET /api/v1/incidents?from&to and GET /api/v1/incidents/{id}.

An incident: `{id, start, end, updated_at, summary, services, anomalies: [{subject, signal,
start, end, observed, expected, score}], root_causes: [{service, score, self_time_z,
self_time_change_ms, inherited_change_ms, edge_gap_z, error_origin_z, error_origins, spans,
evidence}]}`, best candidate first. The list holds incidents overlapping [from, to).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from analytics.anomalies.repository import IncidentRepository
from analytics.callgraph.router import From, To, window_from_query
from analytics.deps import ReaderDep

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])


def _shape(row: dict[str, Any]) -> dict[str, Any]:
    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat()

    return {
        "id": row["id"],
        "start": iso(row["start_ms"]),
        "end": iso(row["end_ms"]),
        "updated_at": iso(row["updated_ms"]),
        "summary": row["summary"],
        "services": list(row["services"]),
        "anomalies": row["anomalies"],
        "root_causes": row["root_causes"],
    }


async def _repo(request: Request) -> IncidentRepository:
    repo = IncidentRepository(request.app.state.store)
    await repo.ensure_table()  # idempotent: the API works before the engine's first run
    return repo


@router.get("")
async def list_incidents(
    request: Request,
    _: ReaderDep,
    start: From = None,
    end: To = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    window = window_from_query(request, start, end)
    rows = await (await _repo(request)).list(window.start, window.end, limit=limit)
    return {"start": window.start, "end": window.end, "incidents": [_shape(r) for r in rows]}


@router.get("/{incident_id}")
async def get_incident(
    request: Request,
    _: ReaderDep,
    incident_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")],
) -> dict[str, Any]:
    row = await (await _repo(request)).get(incident_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no incident {incident_id}")
    return _shape(row)
