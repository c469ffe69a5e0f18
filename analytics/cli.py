"""`meshlens analytics --store URL [--host H] [--http-port 8686]`: the analytics service alone.

Settings come from `Settings.from_env()` (MESH_ANALYTICS_*), with the flags overriding the store
URL, host and port. The app runs under uvicorn in this process's event loop with a graceful
shutdown deadline; SIGINT/SIGTERM stop it cleanly. It prints `analytics http listening on URL`
and `meshlens ready` once it accepts connections. It runs the components `meshlens up` runs for
analytics (`analytics.up.analytics_components`: the HTTP app and the analysis engine).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

__all__ = ["register"]


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "analytics", help="run the analytics service (REST API, control plane)"
    )
    parser.add_argument(
        "--store", default=None, help="chdb://PATH or http(s)://.../db (default: settings)"
    )
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--http-port", type=_port, default=None, help="default 8686")
    parser.add_argument(
        "--graceful-shutdown", type=float, default=5.0, help="seconds in-flight requests get"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from analytics.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
        overrides: dict[str, Any] = {}
        if args.store is not None:
            overrides["store_url"] = args.store
        if args.host is not None:
            overrides["http_host"] = args.host
        if args.http_port is not None:
            overrides["http_port"] = args.http_port
        settings = dataclasses.replace(settings, **overrides)
    except SettingsError as exc:
        print(f"meshlens analytics: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.graceful_shutdown <= 0:
        print("meshlens analytics: --graceful-shutdown must be > 0", file=sys.stderr)
        return 2
    if not settings.api_tokens:
        print(
            "meshlens analytics: warning: no API tokens configured (MESH_ANALYTICS_API_TOKENS); "
            "the operator API will refuse every request",
            file=sys.stderr,
        )

    from analytics.up import analytics_components
    from collector.app import run_components, serve
    from collector.store import StoreError, open_store

    try:
        store = open_store(settings.store_url)
    except (ValueError, StoreError) as exc:
        print(f"meshlens analytics: cannot open store {settings.store_url}: {exc}", file=sys.stderr)
        return 2

    async def main(stop: Any) -> None:
        try:
            await store.migrate()
            components = analytics_components(settings, store, graceful_s=args.graceful_shutdown)
            await run_components(components, stop)
        finally:
            await store.close()

    try:
        return serve(main)
    except StoreError as exc:
        print(f"meshlens analytics: store {store.url}: {exc}", file=sys.stderr)
        return 1
