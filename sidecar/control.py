"""Config application: builds the handler stacks for a config version and swaps them atomically.

Watches the --config file (mtime/size poll with an injected sleep, or an explicit `reload()` on
SIGHUP); a bad document is rejected with every error logged and the last good stacks stay
active. The control-plane client will push documents through `apply()` the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sidecar.stack import Handler, Sleep

__all__ = ["ActiveStacks", "BuiltStackLike", "ConfigControl"]

logger = logging.getLogger(__name__)

C = TypeVar("C")


class BuiltStackLike(Protocol):
    """The shape of sidecar/build.py's BuiltStack that the core relies on."""

    @property
    def handler(self) -> Handler: ...

    @property
    def version(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ActiveStacks:
    """One config version's outbound and inbound stacks: swapped as a single reference."""

    outbound: BuiltStackLike
    inbound: BuiltStackLike
    version: str
    source: str  # "file:<path>", "default" or "control-plane"


class ConfigControl(Generic[C]):
    """Holds the active stacks; loads, validates, builds and swaps new versions."""

    def __init__(
        self,
        *,
        path: str | None,
        load: Callable[[str], C],
        build: Callable[[C | None, str], ActiveStacks],
        sleep: Sleep = asyncio.sleep,
        interval_s: float = 1.0,
        retire_after_s: float = 30.0,
        on_applied: Callable[[ActiveStacks], None] | None = None,
    ) -> None:
        self._path = path
        self._load = load
        self._build = build
        self._sleep = sleep
        self._interval_s = interval_s
        self._retire_after_s = retire_after_s
        self._on_applied = on_applied
        self._stamp: tuple[float, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._active: ActiveStacks | None = None
        self.applied = 0
        self.rejected = 0
        self.last_errors: tuple[str, ...] = ()

    @property
    def active(self) -> ActiveStacks:
        assert self._active is not None, "load_initial() first"
        return self._active

    def load_initial(self) -> ActiveStacks:
        """Load and build the first version; an invalid file raises (the sidecar won't start)."""
        config = None
        if self._path is not None:
            self._stamp = self._file_stamp()
            config = self._load(self._path)
        source = f"file:{self._path}" if self._path else "default"
        self._swap(self._build(config, source))
        return self.active

    def reload(self) -> bool:
        """Re-read the config file now; True if a new version was applied."""
        if self._path is None:
            return False
        try:
            self._stamp = self._file_stamp()
            config = self._load(self._path)
        except (OSError, ValueError) as exc:
            self._reject(exc)
            return False
        return self.apply(config, f"file:{self._path}")

    def apply(self, config: C, source: str) -> bool:
        """Build `config` beside the active stacks and swap; keep the old ones on failure."""
        try:
            stacks = self._build(config, source)
        except ValueError as exc:
            self._reject(exc)
            return False
        self._swap(stacks)
        return True

    async def start(self) -> None:
        """Start polling the config file for changes (no-op without a file)."""
        if self._path is not None and self._task is None:
            self._task = asyncio.create_task(self._poll(), name="config-poll")

    async def close(self) -> None:
        """Stop polling and close every stack still held."""
        tasks = [t for t in (self._task, *self._retiring) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._active is not None:
            await _close_pair(self._active)

    def _swap(self, stacks: ActiveStacks) -> None:
        old, self._active = self._active, stacks
        self.applied += 1
        self.last_errors = ()
        logger.info(
            "config applied", extra={"version": stacks.version, "config_source": stacks.source}
        )
        if self._on_applied is not None:
            self._on_applied(stacks)
        if old is not None:
            # In-flight requests may still run on the old stacks: close them after a grace.
            task = asyncio.get_running_loop().create_task(self._retire(old), name="retire")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: ActiveStacks) -> None:
        await self._sleep(self._retire_after_s)
        await _close_pair(old)

    def _reject(self, exc: Exception) -> None:
        errors = tuple(getattr(exc, "errors", None) or (str(exc),))
        self.rejected += 1
        self.last_errors = errors
        for error in errors:
            logger.error("config rejected", extra={"error": error, "path": self._path})
        logger.warning(
            "keeping the last good config",
            extra={"version": self._active.version if self._active else None},
        )

    def _file_stamp(self) -> tuple[float, int]:
        assert self._path is not None
        st = os.stat(self._path)
        return st.st_mtime, st.st_size

    async def _poll(self) -> None:
        while True:
            await self._sleep(self._interval_s)
            try:
                stamp = self._file_stamp()
            except OSError:
                continue  # mid-replace (or removed): keep the active config, look again
            if stamp != self._stamp:
                self.reload()


async def _close_pair(stacks: ActiveStacks) -> None:
    closers: list[Awaitable[None]] = [stacks.outbound.close(), stacks.inbound.close()]
    for closer in closers:
        try:
            await closer
        except Exception:
            # Retiring an old version must not stop the sidecar; the new one is already live.
            logger.exception("closing a retired stack failed", extra={"version": stacks.version})
