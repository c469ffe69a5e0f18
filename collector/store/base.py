"""The Store protocol and its errors; backends live beside it (embedded.py, server.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["Rows", "Store", "StoreError", "StoreRejected", "StoreUnavailable"]

Rows = list[dict[str, Any]]


class StoreError(Exception):
    """Base of store errors; `code` is the ClickHouse error code when the engine gave one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(StoreError):
    """The store cannot be reached or timed out: the same call may succeed later (retry, spool)."""


class StoreRejected(StoreError):
    """The store refused the statement or data: retrying the same call will not help."""


class Store(Protocol):
    """What every backend offers. All methods are safe to call from the event loop."""

    @property
    def url(self) -> str:
        """The store URL with any password redacted (safe to log)."""
        ...

    async def migrate(self) -> int:
        """Create/upgrade the schema; returns the schema version now recorded in the store."""
        ...

    async def insert(
        self,
        table: str,
        columns: Mapping[str, Sequence[Any]],
        *,
        dedup_token: str | None = None,
    ) -> int:
        """Insert column-oriented data (one equal-length sequence per column) in one block.

        `dedup_token` makes a retried insert of the same block idempotent. Returns rows written.
        """
        ...

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Run a SELECT with `{name:Type}` parameters; rows as dicts."""
        ...

    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT, OPTIMIZE)."""
        ...

    async def ping(self) -> bool:
        """True when the store answers a trivial query."""
        ...

    async def close(self) -> None:
        """Release connections / the embedded session."""
        ...
