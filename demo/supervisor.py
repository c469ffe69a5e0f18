"""Starts and stops the demo's processes: `meshlens up`, each instance's app and its sidecar.

Every child runs in its own session (Ctrl-C reaches only us, so teardown keeps its order: apps,
then sidecars, then `up`, letting each flush its spans) and gets SIGKILL if we die (PDEATHSIG).
Ports are chosen free on 127.0.0.1; readiness is the "ready" line each process prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Child", "Instance", "UpProcess", "free_ports"]

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
_PR_SET_PDEATHSIG = 1


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free right now (held together while choosing, so no duplicates)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _child_setup() -> None:
    """In the child before exec: die with the parent (Linux), so no orphan outlives the demo."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One child process: its output goes to a log file; `ready` matches a line of it."""

    def __init__(self, name: str, argv: list[str], log_path: Path, ready: str) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._ready_re = re.compile(ready)
        self.ready_match: re.Match[str] | None = None
        self.lines: list[str] = []  # the last 50 lines (for errors)
        self.printed: list[str] = []  # the first 200 lines that are not JSON logs
        self.proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, env: dict[str, str] | None = None) -> None:
        self._ready = asyncio.Event()
        self.ready_match = None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_child_setup,
        )
        self._reader = asyncio.create_task(self._read(self.proc), name=f"read-{self.name}")

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with self.log_path.open("a", encoding="utf-8") as log:
            while line := await proc.stdout.readline():
                text = line.decode(errors="replace")
                log.write(text)
                log.flush()
                self.lines = [*self.lines, text.rstrip()][-50:]
                if not text.startswith("{") and len(self.printed) < 200:
                    self.printed.append(text.rstrip())
                if self.ready_match is None and (match := self._ready_re.search(text)):
                    self.ready_match = match
                    self._ready.set()

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> re.Match[str]:
        """Wait for the ready line; RuntimeError (with the last output) if it exits or times out."""
        assert self.proc is not None
        exited = asyncio.create_task(self.proc.wait())
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait({exited, ready}, timeout=timeout_s, return_when="FIRST_COMPLETED")
        finally:
            for task in (exited, ready):
                task.cancel()
        if self.ready_match is None:
            tail = "\n  ".join(self.lines[-10:])
            raise RuntimeError(f"{self.name} did not become ready (see {self.log_path}):\n  {tail}")
        return self.ready_match

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; waits for the exit and the log reader."""
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            logger.warning("child did not stop, killing it", extra={"child": self.name})
            self.signal(signal.SIGKILL)
            await asyncio.wait_for(self.proc.wait(), 5.0)
        await self._join_reader()

    async def kill(self) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 5.0)
        await self._join_reader()

    async def _join_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader, 5.0)
            self._reader = None


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "meshlens_cli", *args]


class UpProcess:
    """`meshlens up --data DIR` as a child; knows the collector's OTLP/HTTP URL once ready."""

    def __init__(
        self,
        data_dir: Path,
        http_port: int | None,
        log_dir: Path,
        bootstrap_services: Sequence[str] = (),
    ) -> None:
        argv = _cli("up", "--data", str(data_dir), "--otlp-http-port", "0", "--otlp-grpc-port", "0")
        if http_port is not None:  # analytics (and its control plane) are part of `up`
            argv += ["--http-port", str(http_port)]
            if bootstrap_services:
                argv += ["--bootstrap-services", ",".join(bootstrap_services)]
        self.child = Child("up", argv, log_dir / "up.log", r"^meshlens ready")
        self.collector_url = ""
        self.addresses: dict[str, str] = {}

    async def start(self) -> None:
        await self.child.start()
        await self.child.wait_ready()
        for line in self.child.printed:
            if match := re.match(r"^(.+?) listening on (\S+)$", line):
                self.addresses[match.group(1)] = match.group(2)
        if "otlp-http" not in self.addresses:
            raise RuntimeError(f"meshlens up printed no otlp-http address: {self.addresses}")
        self.collector_url = self.addresses["otlp-http"]

    async def stop(self) -> None:
        await self.child.stop(timeout_s=60.0)


@dataclass(slots=True)
class Instance:
    """One service instance: app port, sidecar ports, the two processes."""

    service: str
    name: str
    app_port: int
    admin_port: int
    outbound_port: int
    inbound_port: int
    app: Child
    sidecar: Child
    config_path: Path
