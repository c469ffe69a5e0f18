"""Loopback fixtures for sidecar integration tests: a scripted upstream app and sidecar runners.

`ScriptedUpstream` is a real HTTP server (aiohttp) on 127.0.0.1:0. By default it echoes the
request as JSON; `script` (a deque of `Step`) makes the next requests answer a status, wait, reset
the connection, or send headers such as Retry-After. `/sink` counts a streamed request body,
`/stream?mb=N` streams N MiB back, `/ws` is a WebSocket echo. `die()` stops it (then refused).

`sidecars` starts in-process `Sidecar`s on the test's loop; `sidecar_process` runs
`meshlens sidecar` as a child process (for signals and RSS), parsing the addresses it prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from collector.store import Store
from sidecar.app import Sidecar, SidecarOptions

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Step:
    """How the scripted upstream answers one request."""

    status: int = 200
    delay_s: float = 0.0
    reset: bool = False
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body_len: int


class ScriptedUpstream:
    """A real upstream app on loopback whose behaviour tests script per request."""

    def __init__(self, name: str = "app") -> None:
        self.name = name
        self.script: deque[Step] = deque()
        self.default = Step()
        self.seen: list[Seen] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/sink", self._sink)
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/ws", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, shutdown_timeout=0.5)
        await site.start()
        self.port = int(next(a for a in self._runner.addresses if isinstance(a, tuple))[1])
        return self.port

    async def die(self) -> None:
        """Stop listening and drop every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, _lower(request.headers), len(body)))
        step = self.script.popleft() if self.script else self.default
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        if step.reset:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # nothing more to send on a reset connection
        payload = (
            step.body
            or json.dumps(
                {
                    "service": self.name,
                    "method": request.method,
                    "path": request.path_qs,
                    "headers": _lower(request.headers),
                    "body_len": len(body),
                }
            ).encode()
        )
        headers = {"Content-Type": "application/json", **step.headers}
        return web.Response(status=step.status, body=payload, headers=headers)

    async def _sink(self, request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        self.seen.append(Seen(request.method, request.path, _lower(request.headers), total))
        return web.json_response({"bytes": total})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        mib = int(request.query.get("mb", "1"))
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * (1 << 16)
        for _ in range(mib * 16):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(f"echo:{msg.data}")
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws


@pytest.fixture
async def upstream_factory() -> AsyncIterator[Callable[..., Awaitable[ScriptedUpstream]]]:
    made: list[ScriptedUpstream] = []

    async def make(name: str = "app") -> ScriptedUpstream:
        upstream = ScriptedUpstream(name)
        await upstream.start()
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        await upstream.die()


@pytest.fixture
async def upstream(
    upstream_factory: Callable[..., Awaitable[ScriptedUpstream]],
) -> ScriptedUpstream:
    return await upstream_factory("app")


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


class RawHttpApp:
    """An HTTP/1.1 app on raw asyncio streams, for what aiohttp would tidy away: `answer` gets
    each request head as received (with the streams) and writes the reply; `heads` keeps them."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def answer(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for _ in range(100):  # (bounded: one connection's requests)
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                await self.answer(head, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def url(address: tuple[str, int]) -> str:
    return f"http://{address[0]}:{address[1]}"


@pytest.fixture
async def sidecars(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Sidecar]]]:
    """Factory for in-process sidecars: `await sidecars("svc", app_port, config={...})`."""
    started: list[Sidecar] = []

    async def make(
        service: str, app_port: int, config: dict[str, Any] | None = None, **extra: Any
    ) -> Sidecar:
        path = None
        if config is not None:
            path = tmp_path / f"{service}-{len(started)}.json"
            path.write_text(json.dumps(config))
        options = SidecarOptions(
            service=service,
            app_port=app_port,
            config_path=str(path) if path else None,
            admin_port=0,
            outbound_port=0,
            inbound_port=0,
            reload_interval_s=0.05,
            drain_timeout_s=5.0,
            **extra,
        )
        sidecar = Sidecar(options)
        await sidecar.start()
        started.append(sidecar)
        return sidecar

    yield make
    for sidecar in started:
        await sidecar.stop()


_READY = re.compile(
    r"admin=http://([\d.]+):(\d+) outbound=http://([\d.]+):(\d+) inbound=http://([\d.]+):(\d+)"
)


class SidecarProcess:
    """`meshlens sidecar` as a child process."""

    def __init__(self, proc: asyncio.subprocess.Process, match: re.Match[str]) -> None:
        self.proc = proc
        self.admin = (match.group(1), int(match.group(2)))
        self.outbound = (match.group(3), int(match.group(4)))
        self.inbound = (match.group(5), int(match.group(6)))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout_s: float = 10.0) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout_s)


@pytest.fixture
async def sidecar_process(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[SidecarProcess]]]:
    """Factory: `await sidecar_process("svc", app_port, config={...}, extra=[...])`;
    `nofile`: the child's RLIMIT_NOFILE (soft, hard)."""
    procs: list[SidecarProcess] = []

    async def start(
        service: str,
        app_port: int,
        config: dict[str, Any] | None = None,
        extra: list[str] | None = None,
        nofile: tuple[int, int] | None = None,
    ) -> SidecarProcess:
        args = [
            sys.executable, "-m", "meshlens_cli", "--log-level", "WARNING", "sidecar",
            "--service", service, "--app-port", str(app_port),
            "--admin-port", "0", "--outbound-port", "0", "--inbound-port", "0",
            *(extra or []),
        ]  # fmt: skip
        if config is not None:
            path = tmp_path / f"{service}-proc-{len(procs)}.json"
            path.write_text(json.dumps(config))
            args += ["--config", str(path)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}

        def limit() -> None:  # (in the child: its open-files limits, soft and hard)
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, cwd=str(REPO), env=env, preexec_fn=limit
        )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
        except TimeoutError:
            proc.kill()
            raise
        match = _READY.search(line.decode())
        if match is None:
            proc.kill()
            raise AssertionError(f"sidecar did not start: {line!r}")
        handle = SidecarProcess(proc, match)
        procs.append(handle)
        return handle

    yield start
    for handle in procs:
        if handle.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # exited but not yet reaped
                handle.proc.kill()
            await handle.proc.wait()


async def raw_exchange(address: tuple[str, int], data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send raw bytes, half-close, and return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            return await reader.read(-1)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (content-length or chunked) from `reader`."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        body = await reader.read(-1)
    return status, headers, body


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait (bounded) until `check()` is true; fail the test if it never becomes true."""
    for _ in range(int(timeout_s / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout_s}s")


async def wait_for_rows(store: Store, sql: str, want: int) -> list[dict[str, Any]]:
    """Poll `sql` on `store` until it returns at least `want` rows (bounded: 10 s)."""
    rows: list[dict[str, Any]] = []
    for _ in range(200):
        rows = await store.query(sql)
        if len(rows) >= want:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {want} rows, got {len(rows)}: {sql}")


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc))
