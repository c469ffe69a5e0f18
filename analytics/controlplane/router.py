"""HTTP layer of the control plane under /api/v1/controlplane: parse, call the service, shape.

Errors are `ControlPlaneError`s, turned into `{"error", "message", "problems"}` bodies by
`error_response` (installed by `analytics.main.create_app`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from analytics.controlplane.errors import ControlPlaneError, InvalidPolicy, InvalidRequest
from analytics.controlplane.policies import Change
from analytics.controlplane.push import Push
from analytics.controlplane.registry import InstanceState, Registration
from analytics.controlplane.repository import PolicyVersion
from analytics.controlplane.schemas import (
    AckIn,
    AuditOut,
    CertificateIn,
    CertificateOut,
    ChangeOut,
    EndpointOut,
    FleetOut,
    InstanceOut,
    NackOut,
    PolicyIn,
    PolicyOut,
    RegistrationIn,
    RollbackIn,
    RootIn,
    RootOut,
    TrustBundleOut,
    WatchOut,
)
from analytics.controlplane.validation import validate_policy
from analytics.deps import ControlPlaneDep, OperatorDep, PrincipalDep, ReaderDep

__all__ = ["error_response", "router"]

router = APIRouter(prefix="/api/v1/controlplane", tags=["controlplane"])

_NAME = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
ServiceName = Annotated[str, Path(pattern=_NAME)]
InstanceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
Fingerprint = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """Render a ControlPlaneError (every problem for an invalid policy)."""
    assert isinstance(exc, ControlPlaneError)
    body: dict[str, object] = {"error": exc.reason, "message": exc.message}
    if isinstance(exc, InvalidPolicy):
        body["problems"] = list(exc.problems)
    headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _instance(state: InstanceState, lease_ttl_s: float) -> dict[str, Any]:
    reg = state.registration
    return {
        "namespace": reg.namespace,
        "service": reg.service,
        "instance": reg.instance,
        "address": reg.address,
        "ports": dict(reg.ports),
        "labels": dict(reg.labels),
        "upstreams": list(reg.upstreams),
        "registered_at": state.registered_at,
        "last_seen": state.last_seen,
        "lease_ttl_s": lease_ttl_s,
        "acked_version": state.acked_version,
        "acked_at": state.acked_at,
        "nack": NackOut(**asdict(state.nack)) if state.nack else None,
    }


def _policy(policy: PolicyVersion) -> PolicyOut:
    return PolicyOut(**{**asdict(policy), "document": dict(policy.document)})


def _change(change: Change) -> ChangeOut:
    return ChangeOut(path=change.path, op=change.op, old=change.old, new=change.new)


@router.post("/instances", status_code=201)
async def register(
    body: RegistrationIn, principal: PrincipalDep, plane: ControlPlaneDep
) -> InstanceOut:
    try:
        registration = Registration(
            namespace=body.namespace,
            service=body.service,
            instance=body.instance,
            address=body.address,
            ports=body.ports,
            labels=body.labels,
            upstreams=tuple(body.upstreams),
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    state = plane.register(principal, registration, body.running_version)
    return InstanceOut(**_instance(state, plane.settings.lease_ttl_s))


@router.post("/instances/{instance}/heartbeat")
async def heartbeat(
    instance: InstanceId, principal: PrincipalDep, plane: ControlPlaneDep
) -> InstanceOut:
    state = plane.heartbeat(principal, instance)
    return InstanceOut(**_instance(state, plane.settings.lease_ttl_s))


@router.delete("/instances/{instance}", status_code=204)
async def deregister(
    instance: InstanceId, principal: PrincipalDep, plane: ControlPlaneDep
) -> Response:
    plane.deregister(principal, instance)
    return Response(status_code=204)


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, watching: Awaitable[Push | None]) -> Push | None:
    """Run a watch, abandoning it when the sidecar goes away (so no parked waiter lingers)."""
    watch_task = asyncio.ensure_future(watching)
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait((watch_task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watch_task, gone):
            task.cancel()
        await asyncio.gather(watch_task, gone, return_exceptions=True)
    return watch_task.result() if not watch_task.cancelled() else None


@router.get("/watch", response_model=None)
async def watch(
    request: Request,
    principal: PrincipalDep,
    plane: ControlPlaneDep,
    service: Annotated[str, Query(pattern=_NAME)],
    instance: Annotated[str, Query(min_length=1, max_length=128)],
    version: Annotated[int | None, Query(ge=0)] = None,
    revision: Annotated[str | None, Query(max_length=64)] = None,
    timeout_s: Annotated[float | None, Query(gt=0)] = None,
) -> WatchOut | Response:
    """Long-poll: the config to run, or 204 when nothing changed within the timeout."""
    push = await _unless_disconnected(
        request,
        plane.watch(
            principal,
            service,
            instance,
            version,
            revision,
            timeout_s if timeout_s is not None else plane.settings.watch_timeout_s,
        ),
    )
    if push is None:
        return Response(status_code=204)
    return WatchOut(
        service=push.service,
        version=push.version,
        document=dict(push.document) if push.document is not None else None,
        endpoints={
            name: [EndpointOut(**asdict(e)) for e in eps] for name, eps in push.endpoints.items()
        },
        trust_bundle=list(push.trust_bundle),
        revision=push.revision,
        nonce=push.nonce,
    )


@router.post("/ack")
async def ack(body: AckIn, principal: PrincipalDep, plane: ControlPlaneDep) -> InstanceOut:
    state = plane.ack(principal, body.instance, body.version, body.nonce, body.ok, body.error)
    return InstanceOut(**_instance(state, plane.settings.lease_ttl_s))


@router.get("/fleet")
async def fleet(
    principal: ReaderDep,
    plane: ControlPlaneDep,
    service: Annotated[str | None, Query(pattern=_NAME)] = None,
) -> list[FleetOut]:
    return [
        FleetOut(
            **_instance(e.state, plane.settings.lease_ttl_s),
            current_version=e.current_version,
            in_sync=e.in_sync,
        )
        for e in plane.fleet(principal, service)
    ]


@router.get("/endpoints/{service}")
async def endpoints(
    service: ServiceName, principal: ReaderDep, plane: ControlPlaneDep
) -> list[EndpointOut]:
    listed = plane.registry.endpoints(service, trust_domain=plane.ca.trust_domain)
    return [EndpointOut(**asdict(e)) for e in listed]


@router.get("/policies")
async def current_policies(principal: ReaderDep, plane: ControlPlaneDep) -> list[PolicyOut]:
    return [_policy(p) for _, p in sorted(plane.policies.services().items())]


@router.get("/policies/{service}")
async def current_policy(
    service: ServiceName, principal: ReaderDep, plane: ControlPlaneDep
) -> PolicyOut:
    return _policy(await plane.policies.get(service))


@router.put("/policies/{service}", status_code=201)
async def put_policy(
    service: ServiceName, body: PolicyIn, principal: OperatorDep, plane: ControlPlaneDep
) -> PolicyOut:
    policy = await plane.policies.put(
        principal,
        service,
        body.document,
        reason=body.reason,
        expected_version=body.expected_version,
    )
    return _policy(policy)


@router.post("/policies/{service}/validate")
async def validate(service: ServiceName, body: PolicyIn, principal: ReaderDep) -> dict[str, bool]:
    """Dry run: 200 when the document would be accepted, else 422 with every problem."""
    validate_policy(service, body.document)
    return {"valid": True}


@router.get("/policies/{service}/versions")
async def history(
    service: ServiceName,
    principal: ReaderDep,
    plane: ControlPlaneDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[PolicyOut]:
    return [_policy(p) for p in await plane.policies.history(service, limit)]


@router.get("/policies/{service}/versions/{version}")
async def policy_version(
    service: ServiceName,
    version: Annotated[int, Path(ge=1)],
    principal: ReaderDep,
    plane: ControlPlaneDep,
) -> PolicyOut:
    return _policy(await plane.policies.get(service, version))


@router.get("/policies/{service}/diff")
async def diff(
    service: ServiceName,
    principal: ReaderDep,
    plane: ControlPlaneDep,
    from_version: Annotated[int, Query(ge=1)],
    to_version: Annotated[int, Query(ge=1)],
) -> list[ChangeOut]:
    return [_change(c) for c in await plane.policies.diff(service, from_version, to_version)]


@router.post("/policies/{service}/rollback", status_code=201)
async def rollback(
    service: ServiceName, body: RollbackIn, principal: OperatorDep, plane: ControlPlaneDep
) -> PolicyOut:
    policy = await plane.policies.rollback(principal, service, body.to_version, reason=body.reason)
    return _policy(policy)


@router.post("/certificates", status_code=201)
async def certificates(
    body: CertificateIn, principal: PrincipalDep, plane: ControlPlaneDep
) -> CertificateOut:
    issued = await plane.issue_certificate(principal, body.csr)
    return CertificateOut(
        spiffe_id=issued.spiffe_id,
        serial=issued.serial,
        certificate_chain=list(issued.certificate_chain),
        trust_bundle=list(issued.trust_bundle),
        not_before=issued.not_before,
        not_after=issued.not_after,
    )


def _bundle(plane: ControlPlaneDep) -> TrustBundleOut:
    active = plane.ca.active_fingerprint
    return TrustBundleOut(
        trust_domain=plane.ca.trust_domain,
        active=active,
        roots=[
            RootOut(
                fingerprint=r.fingerprint,
                active=r.fingerprint == active,
                not_after=r.cert.not_valid_after_utc.timestamp(),
                pem=r.pem,
            )
            for r in plane.ca.roots()
        ],
    )


@router.get("/trust-bundle")
async def trust_bundle(principal: PrincipalDep, plane: ControlPlaneDep) -> TrustBundleOut:
    return _bundle(plane)


@router.post("/trust-bundle/roots", status_code=201)
async def add_root(body: RootIn, principal: OperatorDep, plane: ControlPlaneDep) -> TrustBundleOut:
    await plane.add_root(principal, body.reason)
    return _bundle(plane)


@router.post("/trust-bundle/roots/{fingerprint}/activate")
async def activate_root(
    fingerprint: Fingerprint, body: RootIn, principal: OperatorDep, plane: ControlPlaneDep
) -> TrustBundleOut:
    await plane.activate_root(principal, fingerprint, body.reason)
    return _bundle(plane)


@router.delete("/trust-bundle/roots/{fingerprint}")
async def retire_root(
    fingerprint: Fingerprint,
    principal: OperatorDep,
    plane: ControlPlaneDep,
    reason: Annotated[str, Query(min_length=1, max_length=2000)],
) -> TrustBundleOut:
    await plane.retire_root(principal, fingerprint, reason)
    return _bundle(plane)


@router.get("/audit")
async def audit(
    principal: ReaderDep,
    plane: ControlPlaneDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    target: Annotated[str | None, Query(max_length=300)] = None,
) -> list[AuditOut]:
    entries = await plane.audit.entries(limit, target)
    return [AuditOut(**{**asdict(e), "details": dict(e.details)}) for e in entries]
