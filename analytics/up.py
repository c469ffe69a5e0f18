"""The analytics parts of `meshlens up`, and the HTTP server that `meshlens analytics` also runs.

`up_components(args, store)` returns the components `meshlens up` starts after the collector;
`meshlens analytics` runs the same list: to add one, append it in `analytics_components` (one
line) and its flags in `add_up_arguments`.

Tokens for `up` (the choice, documented): when no operator API token is configured through
`MESH_ANALYTICS_API_TOKENS`, `up` generates one on first start and keeps it in
`<data>/tokens/operator.token` (mode 0600), reused on later starts; the one line a human needs
to log in prints the token once, on the run that created it. Bootstrap tokens are scoped to one
`namespace/service`: `--bootstrap-services ns/svc,...` generates one per service under
`<data>/tokens/bootstrap/<ns>.<svc>.token` (0600); `up` prints only where they are, never
the secrets. Sidecars read them with `--bootstrap-token-file` or `MESH_SIDECAR_BOOTSTRAP_TOKEN`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import uvicorn
from fastapi import FastAPI

from analytics.engine import AnalysisEngine
from analytics.settings import (
    ApiTokenSpec,
    BootstrapTokenSpec,
    Settings,
    SettingsError,
    hash_token,
)
from analytics.tuning.engine import TuningEngine
from collector.store import Store

__all__ = [
    "AnalyticsComponent",
    "HttpServerComponent",
    "TokenFiles",
    "add_up_arguments",
    "analytics_components",
    "ensure_tokens",
    "up_components",
]

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
GRACEFUL_SHUTDOWN_S = 5.0


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http-port",
        type=int,
        default=8686,
        help="analytics HTTP port (REST, control plane, UI; default 8686)",
    )
    parser.add_argument(
        "--bootstrap-services",
        type=_parse_services,
        default=[],
        help="comma-separated ns/svc list: generate a sidecar bootstrap token for each",
    )


def up_components(args: argparse.Namespace, store: Store) -> list[Any]:
    """The analytics components of `meshlens up`, started in list order after the collector."""
    data = Path(args.data).resolve()
    try:
        base = Settings.from_env()
    except SettingsError as exc:
        print(f"meshlens up: invalid analytics settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    services: list[tuple[str, str]] = getattr(args, "bootstrap_services", [])
    settings, files = ensure_tokens(base, data, services)
    settings = dataclasses.replace(
        settings,
        store_url=store.url,
        data_dir=data,
        http_host=args.host,
        http_port=args.http_port,
    )
    return analytics_components(settings, store, token_files=files)


def analytics_components(
    settings: Settings,
    store: Store,
    *,
    token_files: TokenFiles | None = None,
    graceful_s: float = GRACEFUL_SHUTDOWN_S,
) -> list[Any]:
    """The analytics service's components, for `meshlens up` and `meshlens analytics` alike."""
    components: list[Any] = [
        AnalyticsComponent(settings, store, token_files=token_files, graceful_s=graceful_s),
        AnalysisEngine(store),
        TuningEngine(store),
    ]
    return components


def _parse_services(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        namespace, slash, service = entry.partition("/")
        if not slash or not namespace or not service:
            raise argparse.ArgumentTypeError(f"entry {entry!r} must be namespace/service")
        out.append((namespace, service))
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class TokenFiles:
    """Where `ensure_tokens` keeps generated tokens; `new_operator_token` only on first start."""

    operator: Path | None
    bootstrap: tuple[Path, ...]
    new_operator_token: str | None = dataclasses.field(default=None, repr=False)


def _read_or_create(path: Path) -> tuple[str, bool]:
    if path.exists():
        token = path.read_text().strip()
        if len(token) >= 16:
            return token, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token, True


def ensure_tokens(
    settings: Settings, data: Path, services: list[tuple[str, str]]
) -> tuple[Settings, TokenFiles]:
    """Add generated operator / bootstrap tokens (persisted 0600 under `data/tokens`)."""
    api = settings.api_tokens
    operator_path: Path | None = None
    new_token: str | None = None
    if not any(t.role == "operator" for t in api):
        operator_path = data / "tokens" / "operator.token"
        token, created = _read_or_create(operator_path)
        api = (*api, ApiTokenSpec(name="up-operator", role="operator", sha256=hash_token(token)))
        new_token = token if created else None
    boot = list(settings.bootstrap_tokens)
    paths: list[Path] = []
    for namespace, service in services:
        if any(b.namespace == namespace and b.service == service for b in boot):
            continue
        path = data / "tokens" / "bootstrap" / f"{namespace}.{service}.token"
        token, _ = _read_or_create(path)
        boot.append(
            BootstrapTokenSpec(namespace=namespace, service=service, sha256=hash_token(token))
        )
        paths.append(path)
    replaced = dataclasses.replace(settings, api_tokens=api, bootstrap_tokens=tuple(boot))
    return replaced, TokenFiles(operator_path, tuple(paths), new_token)


class _Server(uvicorn.Server):
    # The owning process handles SIGINT/SIGTERM (collector.app.serve); uvicorn must not.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServerComponent:
    """Runs an ASGI app under uvicorn inside the current event loop (a collector.app.Component)."""

    def __init__(
        self,
        name: str,
        app: FastAPI,
        host: str,
        port: int,
        *,
        graceful_s: float = GRACEFUL_SHUTDOWN_S,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.name = name
        self._app = app
        self._host = host
        self._port = port
        self._graceful_s = graceful_s
        self._start_timeout_s = start_timeout_s
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._address: str | None = None

    async def start(self) -> None:
        config = uvicorn.Config(
            self._app,
            host=self._host,
            port=self._port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=max(1, round(self._graceful_s)),
        )
        self._server = server = _Server(config)
        self._task = task = asyncio.create_task(self._serve(server), name=f"{self.name}-http")
        deadline = asyncio.get_running_loop().time() + self._start_timeout_s
        while not server.started:
            if task.done():
                exc = task.exception()
                raise OSError(
                    f"{self.name}: HTTP server on {self._host}:{self._port} did not start"
                    + (f": {exc}" if exc else "")
                )
            if asyncio.get_running_loop().time() > deadline:
                await self.shutdown()
                raise OSError(f"{self.name}: HTTP server did not start in {self._start_timeout_s}s")
            await asyncio.sleep(0.02)
        sock = server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
        self._address = f"http://{shown}:{port}"

    @staticmethod
    async def _serve(server: _Server) -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits when it cannot bind or start up
            raise OSError(f"uvicorn exited with {exc.code}") from None

    @property
    def port(self) -> int:
        if self._address is None:
            raise RuntimeError(f"{self.name} is not started")
        return int(self._address.rsplit(":", 1)[1])

    async def shutdown(self) -> None:
        server, task = self._server, self._task
        self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), self._graceful_s + 5.0)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except OSError:
            pass

    def addresses(self) -> dict[str, str]:
        return {f"{self.name} http": self._address} if self._address else {}


class AnalyticsComponent(HttpServerComponent):
    """The analytics app (REST + control plane + UI) sharing the process's store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        token_files: TokenFiles | None = None,
        out: TextIO = sys.stdout,
        graceful_s: float = GRACEFUL_SHUTDOWN_S,
    ) -> None:
        from analytics.main import create_app

        super().__init__(
            "analytics",
            create_app(settings, store=store),
            settings.http_host,
            settings.http_port,
            graceful_s=graceful_s,
        )
        self._token_files = token_files
        self._out = out

    async def start(self) -> None:
        await super().start()
        files = self._token_files
        if files is None:
            return
        if files.new_operator_token is not None:
            # The one secret ever printed: a human needs it once to log in.
            print(
                f"operator token (first start, saved to {files.operator}): "
                f"{files.new_operator_token}",
                file=self._out,
            )
        elif files.operator is not None:
            print(f"operator token in {files.operator}", file=self._out)
        for path in files.bootstrap:
            print(f"sidecar bootstrap token in {path}", file=self._out)
