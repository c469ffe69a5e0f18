"""`open_store(url, **options)`: pick the backend for a store URL and validate its options."""

from __future__ import annotations

from typing import Any

from collector.schema import SchemaOptions
from collector.store.base import Store
from collector.store.urls import parse_store_url

__all__ = ["open_store"]

_OPTIONS = {
    "ttl_days": int,
    "cluster": str,
    "database": str,
    "timeout_s": float,
    "connect_timeout_s": float,
}


def _checked(options: dict[str, object]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown store options {unknown}; known: {sorted(_OPTIONS)}")
    checked: dict[str, Any] = {}
    for name, value in options.items():
        kind = _OPTIONS[name]
        if value is None and name == "cluster":
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"store option {name} must be {kind.__name__}, got {value!r}")
        checked[name] = value
    return checked


def open_store(url: str, **options: object) -> Store:
    """Open the store named by `url`; nothing is contacted until the first call.

    Options: ttl_days (0 = keep forever), cluster (ClickHouse cluster name: ON CLUSTER DDL,
    Replicated + Distributed tables), database (overrides the URL's; chdb default `default`),
    timeout_s (deadline of each call), connect_timeout_s (server only).
    Raises ValueError for a bad URL or option, StoreUnavailable when chdb already runs on
    another directory in this process.
    """
    parsed = parse_store_url(url)
    checked = _checked(dict(options))
    schema = SchemaOptions(
        database=checked.get("database", parsed.database),
        ttl_days=checked.get("ttl_days", 0),
        cluster=checked.get("cluster"),
    )
    if parsed.scheme == "chdb":
        from collector.store.embedded import EmbeddedStore

        if schema.cluster:
            raise ValueError("cluster mode needs a ClickHouse server URL, not chdb://")
        return EmbeddedStore(parsed.path, schema, timeout_s=checked.get("timeout_s", 60.0))
    from collector.store.server import ServerStore

    return ServerStore(
        parsed,
        schema,
        timeout_s=checked.get("timeout_s", 30.0),
        connect_timeout_s=checked.get("connect_timeout_s", 5.0),
    )
