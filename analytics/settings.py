"""The analytics service's typed settings; `Settings.from_env()` is the only reader of env vars.

Every variable is `MESH_ANALYTICS_<FIELD>`; token lists are comma-separated (formats below).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

__all__ = [
    "ApiTokenSpec",
    "BootstrapTokenSpec",
    "Role",
    "Settings",
    "SettingsError",
    "hash_token",
]

Role = Literal["viewer", "operator"]
_ROLES: frozenset[str] = frozenset({"viewer", "operator"})
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = "MESH_ANALYTICS_"


class SettingsError(ValueError):
    """The settings are invalid; the message lists every problem."""


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token: settings keep only this, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def _secret_hash(secret: str) -> str:
    # `sha256:<hex>` lets operators keep plaintext tokens out of the environment entirely.
    if secret.startswith("sha256:"):
        digest = secret.removeprefix("sha256:").lower()
        if not _HEX64.match(digest):
            raise ValueError("sha256: must be followed by 64 hex digits")
        return digest
    if len(secret) < 16:
        raise ValueError("tokens must be at least 16 characters")
    return hash_token(secret)


@dataclass(frozen=True, slots=True)
class ApiTokenSpec:
    """An operator-facing API token: a name for the audit log, a role and the token's SHA-256."""

    name: str
    role: Role
    sha256: str = field(repr=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"token name {self.name!r} must be a lower-case DNS label")
        if self.role not in _ROLES:
            raise ValueError(f"role {self.role!r} must be one of {sorted(_ROLES)}")
        if not _HEX64.match(self.sha256):
            raise ValueError("sha256 must be 64 lower-case hex digits")

    @classmethod
    def parse(cls, entry: str) -> ApiTokenSpec:
        """Parse `name:role:secret` (secret is the token or `sha256:<hex>`)."""
        parts = entry.strip().split(":", 2)
        if len(parts) != 3:
            raise ValueError(f"api token entry must be name:role:secret, got {len(parts)} parts")
        name, role, secret = parts
        if role not in _ROLES:
            raise ValueError(f"role {role!r} must be one of {sorted(_ROLES)}")
        return cls(name=name, role=role, sha256=_secret_hash(secret))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class BootstrapTokenSpec:
    """A sidecar bootstrap token scoped to one service identity (namespace + service)."""

    namespace: str
    service: str
    sha256: str = field(repr=False)

    def __post_init__(self) -> None:
        for label in (self.namespace, self.service):
            if not _NAME.match(label):
                raise ValueError(f"{label!r} must be a lower-case DNS label")
        if not _HEX64.match(self.sha256):
            raise ValueError("sha256 must be 64 lower-case hex digits")

    @classmethod
    def parse(cls, entry: str) -> BootstrapTokenSpec:
        """Parse `namespace/service:secret` (secret is the token or `sha256:<hex>`)."""
        scope, sep, secret = entry.strip().partition(":")
        namespace, slash, service = scope.partition("/")
        if not sep or not slash:
            raise ValueError("bootstrap token entry must be namespace/service:secret")
        return cls(namespace=namespace, service=service, sha256=_secret_hash(secret))


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the analytics service (and its control plane) is configured with."""

    store_url: str = "chdb://.meshlens/clickhouse"
    data_dir: Path = Path(".meshlens")
    http_host: str = "127.0.0.1"
    http_port: int = 8686
    trust_domain: str = "cluster.local"
    api_tokens: tuple[ApiTokenSpec, ...] = ()
    bootstrap_tokens: tuple[BootstrapTokenSpec, ...] = ()
    # Operator-supplied root; when both are unset a root is generated under data_dir/ca.
    ca_cert_file: Path | None = None
    ca_key_file: Path | None = None
    cert_ttl_s: float = 24 * 3600.0
    root_ttl_s: float = 365 * 24 * 3600.0
    # Istio-like soft state: sidecars heartbeat every lease_ttl_s / 3.
    lease_ttl_s: float = 6.0
    sweep_interval_s: float = 1.0
    watch_timeout_s: float = 30.0
    max_watch_timeout_s: float = 60.0
    auth_clock_skew_s: float = 60.0
    store_sync_interval_s: float = 2.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not 0 <= self.http_port <= 65535:
            problems.append(f"http_port must be 0..65535, got {self.http_port}")
        if not re.match(r"^[a-z0-9]([a-z0-9.-]{0,253}[a-z0-9])?$", self.trust_domain):
            problems.append(f"trust_domain {self.trust_domain!r} is not a DNS name")
        if (self.ca_cert_file is None) != (self.ca_key_file is None):
            problems.append("ca_cert_file and ca_key_file must be set together")
        for name in (
            "cert_ttl_s",
            "root_ttl_s",
            "lease_ttl_s",
            "sweep_interval_s",
            "watch_timeout_s",
            "max_watch_timeout_s",
            "auth_clock_skew_s",
            "store_sync_interval_s",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if self.cert_ttl_s > self.root_ttl_s:
            problems.append("cert_ttl_s must not exceed root_ttl_s")
        if self.watch_timeout_s > self.max_watch_timeout_s:
            problems.append("watch_timeout_s must not exceed max_watch_timeout_s")
        names = [t.name for t in self.api_tokens]
        if len(names) != len(set(names)):
            problems.append("api token names must be unique")
        hashes = [t.sha256 for t in self.api_tokens] + [t.sha256 for t in self.bootstrap_tokens]
        if len(hashes) != len(set(hashes)):
            problems.append("every token (api and bootstrap) must be distinct")
        if problems:
            raise SettingsError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `MESH_ANALYTICS_*` variables, listing every bad one at once."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        problems: list[str] = []
        for spec in fields(cls):
            key = _PREFIX + spec.name.upper()
            raw = env.get(key)
            if raw is None:
                continue
            try:
                values[spec.name] = _convert(spec.name, raw)
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
        if problems:
            raise SettingsError("; ".join(problems))
        return cls(**values)  # type: ignore[arg-type]


def _convert(name: str, raw: str) -> object:
    if name == "api_tokens":
        return tuple(ApiTokenSpec.parse(e) for e in raw.split(",") if e.strip())
    if name == "bootstrap_tokens":
        return tuple(BootstrapTokenSpec.parse(e) for e in raw.split(",") if e.strip())
    if name == "data_dir":
        if not raw:
            raise ValueError("must not be empty")
        return Path(raw)
    if name in ("ca_cert_file", "ca_key_file"):
        return Path(raw) if raw else None
    if name == "http_port":
        return int(raw)
    if name.endswith("_s"):
        return float(raw)
    return raw
