"""The server backend: a ClickHouse server or cluster over HTTP(S) through clickhouse-connect.

The driver is blocking, so calls run on a small thread pool (the HTTP client is thread-safe without
a session id); every call has a deadline, and the password never appears in URLs, logs or errors.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from collector.schema import SchemaOptions, migrate
from collector.store.arrow import (
    column_types,
    describe_sql,
    needs_types,
    rows_from_arrow,
    to_arrow_table,
)
from collector.store.base import Rows, StoreError, StoreRejected, StoreUnavailable
from collector.store.columns import ColumnTypes
from collector.store.errors import from_engine_message
from collector.store.params import server_params
from collector.store.urls import StoreUrl

__all__ = ["ServerStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_WORKERS = 4


class ServerStore:
    """A Store on a ClickHouse server (or a cluster through one of its nodes)."""

    def __init__(
        self,
        url: StoreUrl,
        options: SchemaOptions,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        """`client_factory` replaces the HTTP client (e.g. clickhouse-connect's in-process chdb
        transport, which tests use to run this backend on the real engine without a server)."""
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be > 0")
        self._target = url
        self._options = options
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="clickhouse")
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._client_factory = client_factory
        self._closed = False
        self._types = ColumnTypes(self.query, self._options.database, self.url)
        self._migrate_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        target = self._target
        auth = f"{target.username}:***@" if target.password else f"{target.username}@"
        return f"{target.scheme}://{auth}{target.host}:{target.port}/{self._options.database}"

    def _new_client(self) -> Any:
        import clickhouse_connect
        from clickhouse_connect import common

        # Map parameters as ClickHouse map literals (the driver's default sends JSON objects,
        # which a {name:Map(K, V)} placeholder cannot parse).
        common.set_setting("dict_parameter_format", "map")
        if self._client_factory is not None:
            return self._client_factory()

        target = self._target
        return clickhouse_connect.get_client(
            host=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            secure=target.scheme == "https",
            # The driver truncates these to whole seconds; our own deadline in _call is exact.
            connect_timeout=max(1, math.ceil(self._connect_timeout_s)),
            send_receive_timeout=max(1, math.ceil(self._timeout_s)),
            query_retries=0,
            autogenerate_session_id=False,
            settings={"session_timezone": "UTC"},
        )

    def _connect(self) -> Any:
        """The shared client, created on first use (worker threads only)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client()
                self._use_database_if_present()
            return self._client

    def _use_database_if_present(self) -> None:
        # The database may not exist before migrate(); until then queries run in the default one.
        database = self._options.database
        exists = self._client.command(
            "SELECT count() FROM system.databases WHERE name = {db:String}", {"db": database}
        )
        if int(exists) > 0:
            self._client.database = database

    async def _call(self, context: str, fn: Callable[[Any], T]) -> T:
        if self._closed:
            raise StoreUnavailable(f"{context}: store {self.url} is closed")
        future = self._executor.submit(lambda: fn(self._connect()))
        deadline = self._timeout_s + self._connect_timeout_s
        try:
            async with asyncio.timeout(deadline):
                return await asyncio.wrap_future(future)
        except TimeoutError as exc:
            raise StoreUnavailable(f"{context}: {self.url} gave no answer in {deadline}s") from exc
        except StoreError:
            raise
        except Exception as exc:  # driver, urllib3 and socket errors: classified below
            raise self._translate(exc, context) from exc

    def _translate(self, exc: Exception, context: str) -> StoreError:
        from clickhouse_connect.driver.exceptions import OperationalError

        network = isinstance(exc, OperationalError | OSError | ConnectionError)
        return from_engine_message(
            f"{type(exc).__name__}: {exc}",
            context=f"{context} on {self.url}",
            secret=self._target.password or None,
            unavailable=network,
        )

    async def migrate(self) -> int:
        async with self._migrate_lock:
            version = await migrate(self, self._options)
            self._types.forget()
            await self._call("use database", lambda client: self._use_database_if_present())
            return version

    async def insert(
        self,
        table: str,
        columns: Mapping[str, Sequence[Any]],
        *,
        dedup_token: str | None = None,
    ) -> int:
        arrow = to_arrow_table(table, columns, await self._types.of(table))
        if arrow.num_rows == 0:
            return 0
        settings: dict[str, Any] = {}
        if dedup_token is not None:
            # Views deduplicate too (older servers default this to 0).
            settings["insert_deduplication_token"] = dedup_token
            settings["deduplicate_blocks_in_dependent_materialized_views"] = 1
        if self._options.cluster:
            # Return only once the shards have the block, so an accepted insert is stored.
            settings["distributed_foreground_insert"] = 1
        database = self._options.database
        try:
            await self._call(
                f"insert into {table}",
                lambda client: client.insert_arrow(
                    table, arrow, database=database, settings=settings
                ),
            )
        except StoreError:
            self._types.forget(table)
            raise
        return int(arrow.num_rows)

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Rows:
        bound = server_params(params)
        result = await self._call(
            "query", lambda client: client.query_arrow(sql, parameters=bound, use_strings=True)
        )
        types: dict[str, str] | None = None
        if needs_types(result):
            try:
                described = await self._call(
                    "describe",
                    lambda client: client.query_arrow(
                        describe_sql(sql), parameters=bound, use_strings=True
                    ),
                )
                types = column_types(described)
            except StoreRejected:
                types = None  # not DESCRIBE-able (e.g. SHOW ...): uint32 columns stay ints
        return rows_from_arrow(result, types)

    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        bound = server_params(params)
        await self._call("command", lambda client: client.command(sql, parameters=bound))

    async def ping(self) -> bool:
        try:
            rows = await self.query("SELECT 1 AS ok")
        except StoreError:
            return False
        return rows == [{"ok": 1}]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client = self._client
        if client is not None:
            await asyncio.wrap_future(self._executor.submit(client.close))
        self._executor.shutdown(wait=False)
        logger.info("server store closed", extra={"store": self.url})
