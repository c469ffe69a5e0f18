"""The ClickHouse store: one interface over the embedded engine (chdb) and a ClickHouse server.

`open_store(url)` is the only constructor the rest of meshlens uses:
  chdb://PATH                          embedded ClickHouse engine in PATH (the default)
  http(s)://user:pass@host:port/db     a ClickHouse server or cluster (clickhouse-connect)
Options: ttl_days, cluster, database, timeout_s, connect_timeout_s (see factory.open_store).
Every blocking call runs off the event loop; queries take parameters, never formatted input.
Insert values and result types are described in arrow.py (DateTime64(9) as int ns, Map as dict).
"""

from __future__ import annotations

from collector.store.base import (
    Rows,
    Store,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)

__all__ = ["Rows", "Store", "StoreError", "StoreRejected", "StoreUnavailable", "open_store"]


def open_store(url: str, **options: object) -> Store:
    """Open the store named by `url` (see module docstring); raises ValueError for a bad URL."""
    from collector.store.factory import open_store as _open

    return _open(url, **options)
