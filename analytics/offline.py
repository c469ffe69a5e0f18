"""`meshlens import` (trace files into a store) and `meshlens analyze` (incidents of a window).

Both open `--store URL` or the embedded store in `--data DIR` (default ./.meshlens), migrate it,
and run the same code as the service: analytics.importers and analytics.engine.analyze.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from analytics.callgraph import TimeWindow, parse_time
from analytics.engine import AnalyzedIncident, analyze
from analytics.importers import FORMATS, ImportFormatError, import_file
from collector.store import Store, StoreError, open_store

__all__ = ["register", "run_analyze", "run_import"]


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data", default=".meshlens", help="embedded store directory")
    where.add_argument("--store", help="store URL (chdb://PATH or http(s)://...)")


def register(subparsers: Any) -> None:
    imp = subparsers.add_parser("import", help="load trace files recorded elsewhere")
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    imp.add_argument("--format", required=True, choices=FORMATS)
    _store_arguments(imp)
    imp.set_defaults(run=run_import)
    ana = subparsers.add_parser("analyze", help="incidents and root causes in a time window")
    ana.add_argument("--from", dest="start", required=True, help="ISO 8601, unix s, now-1h")
    ana.add_argument("--to", dest="end", default="now", help="ISO 8601, unix s, now")
    ana.add_argument("--json", action="store_true", help="print JSON instead of text")
    _store_arguments(ana)
    ana.set_defaults(run=run_analyze)


def _open(args: argparse.Namespace) -> Store:
    url = args.store or f"chdb://{Path(args.data).resolve() / 'clickhouse'}"
    return open_store(url)


async def _import(args: argparse.Namespace, out: TextIO) -> int:
    store = _open(args)
    try:
        await store.migrate()
        for path in args.files:
            count = await import_file(store, path, args.format)
            print(f"{path}: {count} spans imported into {store.url}", file=out)
    finally:
        await store.close()
    return 0


def run_import(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        return asyncio.run(_import(args, out))
    except (ImportFormatError, ValueError, StoreError) as exc:
        print(f"meshlens import: {exc}", file=sys.stderr)
        return 1


def _text(found: list[AnalyzedIncident], window: TimeWindow, out: TextIO) -> None:
    print(
        f"{len(found)} incident(s) between {window.start:%Y-%m-%d %H:%M} and "
        f"{window.end:%Y-%m-%d %H:%M} UTC",
        file=out,
    )
    for item in found:
        inc = item.incident
        print(
            f"\nincident {inc.id}  {inc.start:%H:%M} - "
            f"{inc.end + timedelta(minutes=1):%H:%M}  {inc.summary}",
            file=out,
        )
        for a in inc.anomalies[:8]:
            print(
                f"  anomaly {a.signal:<24} {a.subject:<40} observed={a.observed:.4g} "
                f"expected={a.expected:.4g} score={a.score:.1f}",
                file=out,
            )
        for rank, c in enumerate(item.candidates, start=1):
            print(
                f"  #{rank} {c.service:<32} score={c.score:.1f} self_z={c.self_time_z:.1f} "
                f"gap_z={c.edge_gap_z:.1f} error_origin_z={c.error_origin_z:.1f}",
                file=out,
            )
            for note in c.evidence:
                print(f"       {note}", file=out)


async def _analyze(args: argparse.Namespace, out: TextIO) -> int:
    now = datetime.now(UTC)
    window = TimeWindow(parse_time(args.start, now=now), parse_time(args.end, now=now))
    store = _open(args)
    try:
        await store.migrate()
        found = await analyze(store, window)
    finally:
        await store.close()
    if args.json:
        json.dump([f.record() for f in found], out, default=str, indent=2)
        print(file=out)
    else:
        _text(found, window, out)
    return 0


def run_analyze(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        return asyncio.run(_analyze(args, out))
    except (ValueError, StoreError) as exc:
        print(f"meshlens analyze: {exc}", file=sys.stderr)
        return 1
