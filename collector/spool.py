"""Write-ahead spool: every accepted OTLP request is on disk (fsync'd) before the sender gets 200.

Records live in segment files named by their first sequence number. Each record is framed as
`length u32 | crc32 u32 | seq u64 | tag u8 | payload`; a torn tail (crash mid-write) fails its CRC
and is cut off on open. `checkpoint.json` holds the spool id, the highest sequence number whose
data the store has accepted (`done_upto`) and the batch being written (`inflight`), so a replay
after a crash re-sends exactly that batch with the same dedup token. Appends are group-committed:
one fdatasync covers every record written while the previous one ran.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import os
import struct
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from collector.otlp.errors import Overloaded

__all__ = ["Record", "Spool", "SpoolConfig", "SpoolFull"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIQB")
_SUFFIX = ".seg"
_CHECKPOINT = "checkpoint.json"
T = TypeVar("T")
RunBlocking = Callable[[Callable[[], T]], Awaitable[T]]


class SpoolFull(Overloaded):
    """The spool reached its disk cap (or cannot write): senders must retry later."""

    reason = "spool_full"


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """Where and how much to spool."""

    directory: Path
    segment_bytes: int = 64 * 1024 * 1024
    max_bytes: int = 2 * 1024 * 1024 * 1024
    fsync: bool = True

    def __post_init__(self) -> None:
        if self.segment_bytes < 1024:
            raise ValueError(f"segment_bytes must be >= 1024, got {self.segment_bytes}")
        if self.max_bytes < self.segment_bytes:
            raise ValueError("max_bytes must be >= segment_bytes")


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled request."""

    seq: int
    tag: int
    payload: bytes


@dataclass(slots=True)
class _Segment:
    first_seq: int
    last_seq: int
    path: Path
    size: int


async def _to_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


class Spool:
    """The on-disk log. Create with `Spool.open(config)`; call `start()` before appending."""

    def __init__(self, config: SpoolConfig, run_blocking: RunBlocking[Any] = _to_thread) -> None:
        self.config = config
        self._run_blocking = run_blocking
        self.spool_id = ""
        self.done_upto = 0
        self.inflight: tuple[int, int] | None = None
        self._segments: list[_Segment] = []
        self._fd = -1
        self._last_seq = 0
        self._synced_seq = 0
        self._unsynced_fds: list[int] = []
        self._retired_fds: list[int] = []
        self._dir_dirty = False
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._dirty = asyncio.Event()
        self._failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[int], None]] = []
        self._read_cursor: tuple[int, Path | None, int] = (0, None, 0)
        self._checkpoint_lock = asyncio.Lock()

    # ---- opening and recovery -------------------------------------------------------------
    @classmethod
    def open(cls, config: SpoolConfig, run_blocking: RunBlocking[Any] = _to_thread) -> Spool:
        """Open (or create) the spool directory, cutting off any torn tail record."""
        spool = cls(config, run_blocking)
        config.directory.mkdir(parents=True, exist_ok=True)
        spool._load_checkpoint()
        for path in sorted(config.directory.glob(f"*{_SUFFIX}")):
            segment = spool._recover_segment(path)
            if segment is not None:
                spool._segments.append(segment)
        spool._last_seq = max([spool.done_upto] + [s.last_seq for s in spool._segments])
        spool._synced_seq = spool._last_seq
        spool._release_done()
        return spool

    def _load_checkpoint(self) -> None:
        path = self.config.directory / _CHECKPOINT
        if not path.exists():
            self.spool_id = uuid.uuid4().hex
            self._write_checkpoint()
            return
        state = json.loads(path.read_text())
        self.spool_id = str(state["spool_id"])
        self.done_upto = int(state["done_upto"])
        inflight = state.get("inflight")
        self.inflight = (int(inflight[0]), int(inflight[1])) if inflight else None

    def _recover_segment(self, path: Path) -> _Segment | None:
        first = int(path.name.removesuffix(_SUFFIX))
        last = first - 1
        good_size = 0
        with path.open("rb") as file:
            for seq, _tag, _payload, end in _scan(file):
                last = seq
                good_size = end
        size = path.stat().st_size
        if good_size < size:
            logger.warning(
                "spool segment has a torn or corrupt tail; cutting it off",
                extra={"segment": path.name, "dropped_bytes": size - good_size},
            )
            with path.open("r+b") as file:
                file.truncate(good_size)
                os.fsync(file.fileno())
        if last < first:
            path.unlink()
            return None
        return _Segment(first, last, path, good_size)

    # ---- appending ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the group-commit task."""
        self._task = asyncio.create_task(self._sync_loop(), name="spool-sync")

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def synced_seq(self) -> int:
        return self._synced_seq

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    def add_listener(self, callback: Callable[[int], None]) -> None:
        """Call `callback(synced_seq)` after each group commit."""
        self._listeners.append(callback)

    def append(self, tag: int, payload: bytes) -> int:
        """Write one record (not yet durable: await `wait_synced(seq)`); returns its seq."""
        if self._failure is not None:
            raise SpoolFull(f"spool is not writable: {self._failure}", retry_after_s=5)
        record_size = _HEADER.size + len(payload)
        if self.size_bytes + record_size > self.config.max_bytes:
            raise SpoolFull("spool disk cap reached; the store is behind", retry_after_s=5)
        seq = self._last_seq + 1
        segment = self._writable_segment(seq)
        crc = zlib.crc32(payload, zlib.crc32(struct.pack("<QB", seq, tag)))
        data = _HEADER.pack(len(payload), crc, seq, tag) + payload
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self._failure = exc
            raise SpoolFull(f"spool write failed: {exc}", retry_after_s=5) from exc
        segment.last_seq = seq
        segment.size += len(data)
        self._last_seq = seq
        self._dirty.set()
        return seq

    def _writable_segment(self, seq: int) -> _Segment:
        current = self._segments[-1] if self._segments and self._fd >= 0 else None
        if current is not None and current.size < self.config.segment_bytes:
            return current
        if self._fd >= 0:
            self._retired_fds.append(self._fd)
        path = self.config.directory / f"{seq:020d}{_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        segment = _Segment(seq, seq - 1, path, 0)
        self._segments.append(segment)
        self._dir_dirty = True
        return segment

    async def wait_synced(self, seq: int) -> None:
        """Return once record `seq` is on disk; raises SpoolFull if syncing failed."""
        if seq <= self._synced_seq:
            return
        if self._failure is not None:
            raise SpoolFull(f"spool is not writable: {self._failure}", retry_after_s=5)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        await future

    async def _sync_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            target = self._last_seq
            fds = [*self._retired_fds, self._fd]
            retired, self._retired_fds = self._retired_fds, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            try:
                await self._run_blocking(functools.partial(self._fsync, fds, dir_dirty))
            except OSError as exc:
                logger.exception("spool fsync failed; refusing further writes")
                self._failure = exc
                self._fail_waiters(exc)
                return
            for fd in retired:
                os.close(fd)
            self._synced_seq = target
            while self._waiters and self._waiters[0][0] <= target:
                _, future = self._waiters.popleft()
                if not future.done():
                    future.set_result(None)
            for callback in self._listeners:
                callback(target)

    def _fsync(self, fds: list[int], dir_dirty: bool) -> None:
        if not self.config.fsync:
            return
        for fd in fds:
            if fd >= 0:
                os.fdatasync(fd)
        if dir_dirty:
            _fsync_dir(self.config.directory)

    def _fail_waiters(self, exc: BaseException) -> None:
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(SpoolFull(f"spool fsync failed: {exc}", retry_after_s=5))

    # ---- reading and checkpointing -------------------------------------------------------
    def read(self, start_seq: int, max_bytes: int) -> list[Record]:
        """Synced records with seq >= start_seq, about `max_bytes` of payload (blocking I/O)."""
        out: list[Record] = []
        total = 0
        cursor_seq, cursor_path, cursor_offset = self._read_cursor
        for segment in list(self._segments):
            if segment.last_seq < start_seq:
                continue
            offset = cursor_offset if (cursor_path, cursor_seq) == (segment.path, start_seq) else 0
            with segment.path.open("rb") as file:
                for seq, tag, payload, end in _scan(file, offset):
                    if seq < start_seq:
                        continue
                    if seq > self._synced_seq:
                        return out
                    out.append(Record(seq, tag, payload))
                    self._read_cursor = (seq + 1, segment.path, end)
                    total += len(payload)
                    if total >= max_bytes:
                        return out
        return out

    async def begin_batch(self, first_seq: int, last_seq: int) -> None:
        """Record (durably) that records first..last are about to be written as one batch."""
        async with self._checkpoint_lock:
            self.inflight = (first_seq, last_seq)
            await self._run_blocking(self._write_checkpoint)

    async def commit_batch(self, last_seq: int) -> None:
        """Everything up to `last_seq` is in the store: checkpoint it and drop old segments."""
        async with self._checkpoint_lock:
            self.done_upto = max(self.done_upto, last_seq)
            self.inflight = None
            await self._run_blocking(self._write_checkpoint)
        self._release_done()

    def _write_checkpoint(self) -> None:
        state = {
            "spool_id": self.spool_id,
            "done_upto": self.done_upto,
            "inflight": list(self.inflight) if self.inflight else None,
        }
        path = self.config.directory / _CHECKPOINT
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as file:
            json.dump(state, file)
            file.flush()
            if self.config.fsync:
                os.fsync(file.fileno())
        os.replace(tmp, path)
        if self.config.fsync:
            _fsync_dir(self.config.directory)

    def _release_done(self) -> None:
        # The newest segment stays while it is open for appends.
        keep_last = 1 if self._fd >= 0 else 0
        while len(self._segments) > keep_last and self._segments[0].last_seq <= self.done_upto:
            segment = self._segments.pop(0)
            segment.path.unlink(missing_ok=True)

    async def close(self) -> None:
        """Flush, stop the sync task and close files."""
        if self._task is not None:
            if self._failure is None and self._last_seq > self._synced_seq:
                # Let the sync task commit what is written, so waiters get their answer.
                await self.wait_synced(self._last_seq)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for fd in [*self._retired_fds, self._fd]:
            if fd >= 0:
                os.close(fd)
        self._retired_fds = []
        self._fd = -1


def _scan(file: Any, offset: int = 0) -> Iterator[tuple[int, int, bytes, int]]:
    """Valid records from `offset`: (seq, tag, payload, end offset); stops at the first bad one."""
    file.seek(offset)
    while True:
        header = file.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        length, crc, seq, tag = _HEADER.unpack(header)
        payload = file.read(length)
        if len(payload) < length:
            return
        if zlib.crc32(payload, zlib.crc32(struct.pack("<QB", seq, tag))) != crc:
            return
        offset += _HEADER.size + length
        yield seq, tag, payload, offset


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
