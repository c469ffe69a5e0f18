"""Config application: builds the handler stacks for a config version and swaps them atomically.

Two sources feed the same path (`apply()`: build beside the active stacks with the active ones
as `previous` so balancer/breaker/budget state carries over, then swap one reference):

* the --config file, watched by mtime/size poll (injected sleep) or `reload()` on SIGHUP;
* the control plane (sidecar/cpclient.py), which hands each watch answer to `apply_update()` as
  a `ConfigUpdate` (version, document, endpoints) and ACKs/NACKs with the returned `ApplyResult`.

A bad document is rejected with every error logged (and returned, for the NACK) and the last
good stacks stay active. With a `state_dir`, the last good control-plane document and endpoints
are persisted (tmp + fsync + rename) so a sidecar restarted while the control plane is down
starts from them (`load_persisted()`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from sidecar.http import Endpoint
from sidecar.stack import Handler, Sleep

__all__ = [
    "STATE_FILE",
    "ActiveStacks",
    "ApplyResult",
    "BuiltStackLike",
    "ConfigControl",
    "ConfigUpdate",
    "read_state",
    "write_state",
]

STATE_FILE = "last-good.json"
_STATE_FORMAT = 1

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


@dataclass(frozen=True, slots=True)
class ConfigUpdate:
    """What a config source yields: a version, its policy document and the endpoint table.

    `document` None means "no policy" (defaults); `endpoints` None means "from the document".
    """

    version: int | None
    document: Mapping[str, Any] | None
    endpoints: Mapping[str, tuple[Endpoint, ...]] | None
    source: str


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of one update: ACK when ok, else NACK with every problem."""

    ok: bool
    errors: tuple[str, ...] = ()


def _endpoint_doc(e: Endpoint) -> dict[str, Any]:
    return {
        "host": e.host,
        "port": e.port,
        "instance": e.instance,
        "weight": e.weight,
        "labels": dict(e.labels),
    }


def write_state(state_dir: Path, update: ConfigUpdate) -> None:
    """Persist `update` atomically: write a temp file, fsync it, rename, fsync the directory."""
    state_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": _STATE_FORMAT,
        "version": update.version,
        "document": dict(update.document) if update.document is not None else None,
        "endpoints": {
            service: [_endpoint_doc(e) for e in endpoints]
            for service, endpoints in (update.endpoints or {}).items()
        },
        "source": update.source,
    }
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    path = state_dir / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_state(state_dir: Path) -> ConfigUpdate | None:
    """The persisted last good update, or None (absent; unreadable ones are logged)."""
    path = state_dir / STATE_FILE
    try:
        doc = json.loads(path.read_bytes())
        if doc.get("format") != _STATE_FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        document = doc["document"]
        if document is not None and not isinstance(document, dict):
            raise ValueError("document must be an object or null")
        endpoints = {
            str(service): tuple(
                Endpoint(
                    str(e["host"]),
                    int(e["port"]),
                    service=str(service),
                    instance=str(e.get("instance", "")),
                    weight=int(e.get("weight", 1)),
                    labels=tuple(sorted((str(k), str(v)) for k, v in e["labels"].items())),
                )
                for e in entries
            )
            for service, entries in doc["endpoints"].items()
        }
        version = doc["version"]
        return ConfigUpdate(
            version=int(version) if version is not None else None,
            document=document,
            endpoints=endpoints,
            source=f"persisted:{path}",
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.error(
            "ignoring unreadable persisted config", extra={"path": str(path), "error": str(exc)}
        )
        return None


class ConfigControl(Generic[C]):
    """Holds the active stacks; loads, validates, builds and swaps new versions."""

    def __init__(
        self,
        *,
        path: str | None,
        load: Callable[[str], C],
        build: Callable[[C | None, str, ActiveStacks | None], ActiveStacks],
        parse: Callable[[Mapping[str, Any]], C] | None = None,
        sleep: Sleep = asyncio.sleep,
        interval_s: float = 1.0,
        retire_after_s: float = 30.0,
        on_applied: Callable[[ActiveStacks], None] | None = None,
        on_endpoints: Callable[[Mapping[str, tuple[Endpoint, ...]]], object] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self._path = path
        self._load = load
        self._build = build
        self._sleep = sleep
        self._interval_s = interval_s
        self._retire_after_s = retire_after_s
        self._on_applied = on_applied
        self._parse = parse
        self._on_endpoints = on_endpoints
        self._state_dir = state_dir
        self._good: ConfigUpdate | None = None  # last good update from a document source
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
        self._swap(self._build(config, source, None))
        return self.active

    @property
    def good_version(self) -> int | None:
        """The version of the last good document from `apply_update()` (None before one)."""
        return self._good.version if self._good is not None else None

    @property
    def good_document(self) -> Mapping[str, Any] | None:
        return self._good.document if self._good is not None else None

    def load_persisted(self) -> bool:
        """Apply the last good update persisted in `state_dir`; True if there was one."""
        if self._state_dir is None:
            return False
        update = read_state(self._state_dir)
        if update is None:
            return False
        result = self.apply_update(update, persist=False)
        if result.ok:
            logger.info(
                "started from the persisted config",
                extra={"version": update.version, "config_source": update.source},
            )
        return result.ok

    def apply_update(
        self, update: ConfigUpdate, *, policy: bool = True, persist: bool = True
    ) -> ApplyResult:
        """Apply a source's update: endpoints always, the document when `policy` (a new version).

        Returns ApplyResult(ok=False, every problem) and keeps the active stacks when the
        document does not parse or build. A good update is persisted to `state_dir`.
        """
        if update.endpoints is not None and self._on_endpoints is not None:
            self._on_endpoints(update.endpoints)
        good = self._good
        if policy:
            try:
                if update.document is not None and self._parse is None:
                    raise ValueError("this sidecar cannot parse documents")
                config = (
                    self._parse(update.document)
                    if update.document is not None and self._parse is not None
                    else None
                )
                stacks = self._build_checked(config, update.source)
            except ValueError as exc:
                return ApplyResult(False, self._reject(exc, update.source))
            self._swap(stacks)
            good = update
        elif good is None:
            return ApplyResult(True)
        self._good = ConfigUpdate(
            version=good.version,
            document=good.document,
            endpoints=update.endpoints if update.endpoints is not None else good.endpoints,
            source=good.source,
        )
        if persist and self._state_dir is not None:
            try:
                write_state(self._state_dir, self._good)
            except OSError as exc:
                # Serving matters more than the restart cache: log, keep running.
                logger.error(
                    "could not persist the last good config",
                    extra={"state_dir": str(self._state_dir), "error": str(exc)},
                )
        return ApplyResult(True)

    def reload(self) -> bool:
        """Re-read the config file now; True if a new version was applied."""
        if self._path is None:
            return False
        try:
            self._stamp = self._file_stamp()
            config = self._load(self._path)
        except (OSError, ValueError) as exc:
            self._reject(exc, f"file:{self._path}")
            return False
        return self.apply(config, f"file:{self._path}")

    def apply(self, config: C, source: str) -> bool:
        """Build `config` beside the active stacks and swap; keep the old ones on failure."""
        try:
            stacks = self._build_checked(config, source)
        except ValueError as exc:
            self._reject(exc, source)
            return False
        self._swap(stacks)
        return True

    def _build_checked(self, config: C | None, source: str) -> ActiveStacks:
        """Build beside the active stacks. A build that fails other than with a ValueError is a
        bug, not a bad document, but it is answered the same way: the version is rejected (with
        the traceback logged) and the active one kept. Raised out of the file poll, it ended
        hot reloading for good, silently; out of a control-plane update, nothing was reported."""
        try:
            return self._build(config, source, self._active)
        except ValueError:
            raise
        except Exception as exc:
            logger.exception("building the config failed", extra={"config_source": source})
            raise ValueError(f"building the config failed: {type(exc).__name__}: {exc}") from exc

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

    def _reject(self, exc: Exception, source: str) -> tuple[str, ...]:
        errors = tuple(getattr(exc, "errors", None) or (str(exc),))
        self.rejected += 1
        self.last_errors = errors
        for error in errors:
            logger.error("config rejected", extra={"error": error, "config_source": source})
        logger.warning(
            "keeping the last good config",
            extra={"version": self._active.version if self._active else None},
        )
        return errors

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
