"""Mesh identities: SPIFFE IDs `spiffe://<trust-domain>/ns/<namespace>/sa/<service>`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from analytics.controlplane.errors import Forbidden

__all__ = ["SpiffeId"]

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,253}[a-z0-9])?$")
_URI = re.compile(r"^spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)$")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A workload identity; `service` is the SPIFFE service account."""

    trust_domain: str
    namespace: str
    service: str

    def __post_init__(self) -> None:
        if not _DOMAIN.match(self.trust_domain):
            raise ValueError(f"trust domain {self.trust_domain!r} is not a DNS name")
        for label in (self.namespace, self.service):
            if not _LABEL.match(label):
                raise ValueError(f"{label!r} must be a lower-case DNS label")

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service}"

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse a SPIFFE URI of the mesh's shape; Forbidden when it is not one."""
        match = _URI.match(uri)
        if match is None:
            raise Forbidden(f"{uri!r} is not a spiffe://<td>/ns/<ns>/sa/<service> ID")
        try:
            return cls(match.group(1), match.group(2), match.group(3))
        except ValueError as exc:
            raise Forbidden(str(exc)) from exc
