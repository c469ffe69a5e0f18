"""FastAPI dependency aliases shared by the analytics routers (`Annotated[..., Depends(...)]`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from analytics.controlplane.auth import CERT_HEADER, SIGNATURE_HEADER, Principal
from analytics.controlplane.service import ControlPlane
from analytics.settings import Settings

__all__ = [
    "ControlPlaneDep",
    "OperatorDep",
    "PrincipalDep",
    "ReaderDep",
    "SettingsDep",
    "get_control_plane",
    "get_principal",
    "get_settings",
]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_control_plane(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.control_plane
    return plane


SettingsDep = Annotated[Settings, Depends(get_settings)]
ControlPlaneDep = Annotated[ControlPlane, Depends(get_control_plane)]


async def get_principal(request: Request, plane: ControlPlaneDep) -> Principal:
    """Authenticate the caller (bearer token, or workload certificate + request signature)."""
    # Workloads sign the request target exactly as sent, so use the raw path and query bytes.
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string", b"")
    target = raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    client_cert = request.headers.get(CERT_HEADER)
    signature = request.headers.get(SIGNATURE_HEADER)
    # Only signed requests need the body before routing (it is cached for the endpoint).
    signed = client_cert is not None or signature is not None
    return plane.auth.authenticate(
        authorization=request.headers.get("authorization"),
        client_cert=client_cert,
        signature=signature,
        method=request.method,
        target=target,
        body=await request.body() if signed else b"",
    )


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _reader(principal: PrincipalDep) -> Principal:
    principal.require_reader()
    return principal


def _operator(principal: PrincipalDep) -> Principal:
    principal.require_operator()
    return principal


ReaderDep = Annotated[Principal, Depends(_reader)]
OperatorDep = Annotated[Principal, Depends(_operator)]
