"""Turn engine/driver failures into StoreUnavailable (retry later) or StoreRejected (give up).

ClickHouse exceptions carry `Code: N.`; codes for overload, timeouts, network and replication
trouble are retryable, everything else (syntax, unknown table, bad data) is a rejection.
"""

from __future__ import annotations

import re

from collector.store.base import StoreError, StoreRejected, StoreUnavailable

__all__ = ["RETRYABLE_CODES", "clickhouse_code", "from_engine_message", "scrub"]

RETRYABLE_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE
        159,  # TIMEOUT_EXCEEDED
        160,  # TOO_SLOW
        164,  # READONLY
        194,  # REQUIRED_PASSWORD
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        516,  # AUTHENTICATION_FAILED: a credentials fix makes the same call work; keep the data
        999,  # KEEPER_EXCEPTION
    }
)
_CODE = re.compile(r"Code:\s*(\d+)")
_MAX_MESSAGE = 2000


def clickhouse_code(message: str) -> int | None:
    """The `Code: N` in a ClickHouse exception message, if any."""
    match = _CODE.search(message)
    return int(match.group(1)) if match else None


def scrub(message: str, secret: str | None) -> str:
    """`message` without `secret` (a password) and cut to a loggable length."""
    if secret:
        message = message.replace(secret, "***")
    return message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE] + "..."


def from_engine_message(
    message: str, *, context: str, secret: str | None = None, unavailable: bool = False
) -> StoreError:
    """The store error for an engine exception message; `unavailable` forces StoreUnavailable."""
    code = clickhouse_code(message)
    text = f"{context}: {scrub(message.strip(), secret)}"
    if unavailable or (code is not None and code in RETRYABLE_CODES):
        return StoreUnavailable(text, code=code)
    return StoreRejected(text, code=code)
