"""`meshlens collector --store URL` and `meshlens up [--data DIR]` (the all-in-one process).

`up` runs the collector on `chdb://DIR/clickhouse` plus the components of every module in
`UP_MODULES` that is installed: such a module offers `up_components(args, store) -> list of
Component` (see collector.app.Component) and optionally `add_up_arguments(parser)`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from collector.app import CollectorComponent, CollectorSettings, Component, run_components, serve
from collector.store import StoreError, open_store

__all__ = ["UP_MODULES", "register"]

logger = logging.getLogger(__name__)

# Later issues add their parts of `meshlens up` here (analytics, control plane, UI).
UP_MODULES = ("analytics.up",)


def register(subparsers: Any) -> None:
    collector = subparsers.add_parser("collector", help="run the OTLP collector")
    collector.add_argument("--store", required=True, help="chdb://PATH or http(s)://.../db")
    collector.add_argument(
        "--cluster",
        default=None,
        help="ClickHouse cluster name: ON CLUSTER DDL, Replicated + Distributed tables",
    )
    _add_collector_arguments(collector, default_spool=None)
    collector.set_defaults(run=_run_collector)

    up = subparsers.add_parser("up", help="run the embedded all-in-one (collector + ...)")
    up.add_argument("--data", default=".meshlens", help="data directory (default ./.meshlens)")
    _add_collector_arguments(up, default_spool=None)
    for module in _up_modules():
        add = getattr(module, "add_up_arguments", None)
        if add is not None:
            add(up)
    up.set_defaults(run=_run_up)


def _add_collector_arguments(parser: argparse.ArgumentParser, default_spool: str | None) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--otlp-http-port", type=_port, default=4318)
    parser.add_argument("--otlp-grpc-port", type=_port, default=4317)
    parser.add_argument("--spool", default=default_spool, help="write-ahead spool directory")
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--spool-max-bytes", type=int, default=2 * 1024 * 1024 * 1024)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _settings(args: argparse.Namespace, spool: Path) -> CollectorSettings:
    return CollectorSettings(
        spool_dir=spool,
        host=args.host,
        otlp_http_port=args.otlp_http_port,
        otlp_grpc_port=args.otlp_grpc_port,
        max_body_bytes=args.max_body_bytes,
        spool_max_bytes=args.spool_max_bytes,
    )


def _run_collector(args: argparse.Namespace) -> int:
    spool = Path(args.spool) if args.spool else Path(".meshlens") / "spool"
    return _run(
        args.store,
        lambda store: [CollectorComponent(_settings(args, spool), store)],
        cluster=args.cluster,
    )


def _run_up(args: argparse.Namespace) -> int:
    data = Path(args.data).resolve()
    spool = Path(args.spool) if args.spool else data / "spool"
    data.mkdir(parents=True, exist_ok=True)

    def components(store: Any) -> list[Component]:
        out: list[Component] = [CollectorComponent(_settings(args, spool), store)]
        for module in _up_modules():
            out.extend(module.up_components(args, store))
        return out

    return _run(f"chdb://{data / 'clickhouse'}", components)


def _run(url: str, build: Any, cluster: str | None = None) -> int:
    try:
        store = open_store(url, cluster=cluster)
    except (ValueError, StoreError) as exc:
        print(f"error: cannot open store {url}: {exc}", file=sys.stderr)
        return 2

    async def main(stop: asyncio.Event) -> None:
        try:
            await store.migrate()
            await run_components(build(store), stop)
        finally:
            await store.close()

    try:
        return serve(main)
    except StoreError as exc:
        print(f"error: store {store.url}: {exc}", file=sys.stderr)
        return 1


def _up_modules() -> list[ModuleType]:
    modules = []
    for name in UP_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            modules.append(importlib.import_module(name))
    return modules
