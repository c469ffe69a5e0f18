"""Request and response bodies of the control-plane API (the boundary; services use our types)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AckIn",
    "AuditOut",
    "CertificateIn",
    "CertificateOut",
    "ChangeOut",
    "EndpointOut",
    "FleetOut",
    "InstanceOut",
    "NackOut",
    "PolicyIn",
    "PolicyOut",
    "RegistrationIn",
    "RollbackIn",
    "RootIn",
    "RootOut",
    "TrustBundleOut",
    "WatchOut",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistrationIn(_In):
    namespace: str = "default"
    service: str
    instance: str
    address: str
    ports: dict[str, int] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    upstreams: list[str] = Field(default_factory=list)
    # The version the sidecar already runs (from its last-good file) when it re-registers.
    running_version: int | None = Field(default=None, ge=0)


class NackOut(BaseModel):
    version: int
    error: str
    at: float


class InstanceOut(BaseModel):
    namespace: str
    service: str
    instance: str
    address: str
    ports: dict[str, int]
    labels: dict[str, str]
    upstreams: list[str]
    registered_at: float
    last_seen: float
    lease_ttl_s: float
    acked_version: int | None
    acked_at: float | None
    nack: NackOut | None


class FleetOut(InstanceOut):
    current_version: int
    in_sync: bool


class EndpointOut(BaseModel):
    instance: str
    address: str
    ports: dict[str, int]
    labels: dict[str, str]
    identity: str = ""  # spiffe://<trust-domain>/ns/<ns>/sa/<service>


class WatchOut(BaseModel):
    service: str
    version: int
    document: dict[str, Any] | None
    endpoints: dict[str, list[EndpointOut]]
    trust_bundle: list[str]
    revision: str
    nonce: str


class AckIn(_In):
    instance: str
    version: int = Field(ge=0)
    nonce: str = Field(min_length=1, max_length=128)
    ok: bool
    error: str = ""


class PolicyIn(_In):
    document: dict[str, Any]
    reason: str = Field(min_length=1, max_length=2000)
    expected_version: int | None = Field(default=None, ge=0)


class RollbackIn(_In):
    to_version: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=2000)


class PolicyOut(BaseModel):
    service: str
    version: int
    created_at: float
    author: str
    reason: str
    action: str
    source_version: int
    digest: str
    document: dict[str, Any]


class ChangeOut(BaseModel):
    path: str
    op: str
    old: Any
    new: Any


class CertificateIn(_In):
    csr: str = Field(min_length=1, max_length=16384)


class CertificateOut(BaseModel):
    spiffe_id: str
    serial: str
    certificate_chain: list[str]
    trust_bundle: list[str]
    not_before: float
    not_after: float


class RootIn(_In):
    reason: str = Field(min_length=1, max_length=2000)


class RootOut(BaseModel):
    fingerprint: str
    active: bool
    not_after: float
    pem: str


class TrustBundleOut(BaseModel):
    trust_domain: str
    active: str
    roots: list[RootOut]


class AuditOut(BaseModel):
    ts: float
    id: str
    actor: str
    actor_kind: str
    action: str
    target: str
    reason: str
    details: dict[str, Any]
