"""The embedded backend: ClickHouse in-process through chdb, for `chdb://PATH` store URLs.

chdb runs one engine per process on one data directory (and one process per directory), so every
store opened in a process on that path shares one session, driven by one dedicated worker thread
that serialises all calls; the session closes when the last store using it closes.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pyarrow as pa

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
from collector.store.errors import clickhouse_code, from_engine_message
from collector.store.params import params_text

__all__ = ["EmbeddedStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Engine:
    """The process's one chdb session on `path`, its worker thread and its number of users."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.users = 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chdb")
        self._session: Any = None
        self._database = ""

    def session(self, database: str) -> Any:
        """The open session with `database` current (worker thread only)."""
        if self._session is None:
            from chdb.session import Session

            os.makedirs(self.path, exist_ok=True)
            try:
                self._session = Session(self.path)  # type: ignore[no-untyped-call]
            except Exception as exc:  # chdb raises plain RuntimeError; translated by the caller
                raise _OpenFailed(str(exc)) from exc
            # Parameters and DateTime text are read and written as UTC, whatever the host's TZ.
            self._session.query("SET session_timezone = 'UTC'")
            self._session.query("SET deduplicate_blocks_in_dependent_materialized_views = 1")
            self._database = ""
        if database != self._database:
            self._session.query(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            self._session.query(f"USE `{database}`")
            self._database = database
        return self._session

    def run(self, database: str, fn: Callable[[Any], T]) -> T:
        """`fn(session)`; a failure without a ClickHouse code means the session itself broke,
        so it is dropped and the next call opens a fresh one (worker thread only)."""
        session = self.session(database)
        try:
            return fn(session)
        except Exception as exc:  # re-raised; only decides whether the session survives
            if clickhouse_code(str(exc)) is None:
                logger.warning("embedded session failed; reopening on next call", exc_info=True)
                self.close()
            raise

    def close(self) -> None:
        """Close the session (worker thread only)."""
        if self._session is not None:
            session, self._session = self._session, None
            session.close()


class _OpenFailed(Exception):
    """The chdb session could not be created (directory locked by another process, bad path)."""


_lock = threading.Lock()
_engine: _Engine | None = None


def _acquire(path: str) -> _Engine:
    global _engine
    with _lock:
        if _engine is not None and _engine.path != path:
            raise StoreUnavailable(
                f"this process already has the embedded store open at chdb://{_engine.path}; "
                f"chdb allows one data directory per process (close it before opening {path})"
            )
        if _engine is None:
            _engine = _Engine(path)
        _engine.users += 1
        return _engine


def _release(engine: _Engine) -> bool:
    """Drop one user; True when it was the last and the engine must be shut down."""
    global _engine
    with _lock:
        engine.users -= 1
        if engine.users > 0:
            return False
        if _engine is engine:
            _engine = None
        return True


class EmbeddedStore:
    """A Store on the in-process chdb engine."""

    def __init__(self, path: str, options: SchemaOptions, *, timeout_s: float = 60.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._path = os.path.abspath(path)
        self._options = options
        self._timeout_s = timeout_s
        self._engine = _acquire(self._path)
        self._closed = False
        self._types = ColumnTypes(self.query, self._options.database, self.url)
        self._migrate_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return f"chdb://{self._path}"

    async def _call(self, context: str, fn: Callable[[Any], T]) -> T:
        if self._closed:
            raise StoreUnavailable(f"{context}: store {self.url} is closed")
        database = self._options.database
        engine = self._engine

        future = engine.executor.submit(engine.run, database, fn)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await asyncio.wrap_future(future)
        except TimeoutError as exc:
            raise StoreUnavailable(f"{context}: no answer within {self._timeout_s}s") from exc
        except _OpenFailed as exc:
            raise from_engine_message(
                str(exc), context=f"{context}: cannot open {self.url}", unavailable=True
            ) from exc
        except StoreError:
            raise
        except Exception as exc:  # chdb raises RuntimeError subclasses carrying `Code: N.`
            message = str(exc) or type(exc).__name__
            # No ClickHouse code: the session, not the statement, failed (see _Engine.run).
            broken = clickhouse_code(message) is None
            raise from_engine_message(message, context=context, unavailable=broken) from exc

    async def migrate(self) -> int:
        async with self._migrate_lock:
            version = await migrate(self, self._options)
            self._types.forget()
            return version

    async def insert(
        self,
        table: str,
        columns: Mapping[str, Sequence[Any]],
        *,
        dedup_token: str | None = None,
    ) -> int:
        qualified = self._options.qualified(table)
        arrow = to_arrow_table(table, columns, await self._types.of(table))
        if arrow.num_rows == 0:
            return 0
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, arrow.schema) as writer:
            writer.write_table(arrow)
        data = sink.getvalue()
        names = ", ".join(f"`{name}`" for name in arrow.column_names)

        def run(session: Any) -> None:
            # send_insert ignores SETTINGS in its statement, so the token is a session setting,
            # reset afterwards. Dependent views deduplicate too (their targets have the window).
            if dedup_token is not None:
                session.query(f"SET insert_deduplication_token = {_quote(dedup_token)}")
            try:
                with session.send_insert(
                    f"INSERT INTO {qualified} ({names})", "ArrowStream"
                ) as ins:
                    ins.append(data)
                    ins.finish()
            finally:
                if dedup_token is not None:
                    session.query("SET insert_deduplication_token = ''")

        try:
            await self._call(f"insert into {table}", run)
        except StoreError:
            self._types.forget(table)  # the table may have changed under us
            raise
        return int(arrow.num_rows)

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Rows:
        text = params_text(params)
        result: pa.Table = await self._call(
            "query", lambda session: session.query(sql, "ArrowTable", params=text)
        )
        types: dict[str, str] | None = None
        if needs_types(result):
            try:
                described: pa.Table = await self._call(
                    "describe",
                    lambda session: session.query(describe_sql(sql), "ArrowTable", params=text),
                )
                types = column_types(described)
            except StoreRejected:
                types = None  # not DESCRIBE-able (e.g. SHOW ...): uint32 columns stay ints
        return rows_from_arrow(result, types)

    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        text = params_text(params)
        await self._call("command", lambda session: session.query(sql, "Null", params=text))

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
        engine = self._engine
        if _release(engine):
            await asyncio.wrap_future(engine.executor.submit(engine.close))
            engine.executor.shutdown(wait=False)
            logger.info("embedded store closed", extra={"store": self.url})
