"""Optional JSON access log: one line per request handled by the sidecar, with its trace id.

Off by default. It records only fixed fields (never headers other than user-agent and request
id, never query strings or bodies), so authorization and cookie values cannot leak into it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import IO

__all__ = ["AccessLog", "AccessRecord"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AccessRecord:
    start_ns: int
    direction: str
    method: str
    authority: str
    path: str
    status: int
    response_flags: str
    duration_ms: float
    request_bytes: int
    response_bytes: int
    upstream: str
    route: str
    endpoint: str
    attempts: int
    trace_id: str
    span_id: str
    request_id: str
    peer_identity: str
    user_agent: str
    error: str


class AccessLog:
    """Writes AccessRecords as JSON lines to a stream (a file path, or "-" for stdout)."""

    __slots__ = ("_last_error_log", "_owned", "_stream", "errors")

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._owned = False
        self.errors = 0
        self._last_error_log = -60.0

    @classmethod
    def open(cls, target: str) -> AccessLog:
        """`target` "-" is stdout, anything else a file opened for appending."""
        if target == "-":
            return cls(sys.stdout)
        log = cls(open(target, "a", encoding="utf-8", buffering=1 << 16))
        log._owned = True
        return log

    def write(self, record: AccessRecord) -> None:
        entry = {
            "ts": _iso(record.start_ns),
            "direction": record.direction,
            "method": record.method,
            "authority": record.authority,
            "path": record.path,
            "status": record.status,
            "flags": record.response_flags,
            "duration_ms": round(record.duration_ms, 3),
            "bytes_received": record.request_bytes,
            "bytes_sent": record.response_bytes,
            "upstream": record.upstream,
            "route": record.route,
            "endpoint": record.endpoint,
            "attempts": record.attempts,
            "trace_id": record.trace_id,
            "span_id": record.span_id,
            "request_id": record.request_id,
            "peer_identity": record.peer_identity,
            "user_agent": record.user_agent,
            "error": record.error,
        }
        try:
            self._stream.write(json.dumps(entry, separators=(",", ":")) + "\n")
        except OSError:
            # A full disk must not fail the request being logged: count, log once per minute.
            self._failed("access log write failed")

    def flush(self) -> None:
        """Flush the buffered lines; a failure (full disk, a closed pipe) is counted, not
        raised: the telemetry housekeeping that flushes every interval ended on it."""
        try:
            self._stream.flush()
        except OSError:
            self._failed("access log flush failed")

    def close(self) -> None:
        self.flush()
        if self._owned:
            with contextlib.suppress(OSError):  # (what could not be flushed is counted)
                self._stream.close()

    def _failed(self, message: str) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= 60.0:
            logger.exception(message, extra={"errors": self.errors})
            self._last_error_log = now


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"
