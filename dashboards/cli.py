"""`meshlens dashboards push --grafana URL --token T`: install our datasources and dashboards.

Also `meshlens dashboards sql --from T --to T`: print every panel's SQL with the macros expanded
(to paste into clickhouse-client when a panel looks wrong).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from dashboards.catalog import load_dashboards, queries
from dashboards.datasources import DatasourceOptions
from dashboards.macros import MacroError, TimeRange, expand
from dashboards.push import FOLDER_TITLE, FOLDER_UID, GrafanaApiError, grafana_api, push

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dashboards", help="Grafana dashboards and datasources")
    commands = parser.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    pusher = commands.add_parser("push", help="create or update datasources and dashboards")
    pusher.add_argument("--grafana", required=True, help="Grafana URL, e.g. http://localhost:3000")
    token = pusher.add_mutually_exclusive_group(required=True)
    token.add_argument("--token", help="Grafana service-account token (Bearer)")
    token.add_argument("--token-file", help="file holding the token (keeps it out of `ps`)")
    pusher.add_argument("--folder-uid", default=FOLDER_UID)
    pusher.add_argument("--folder-title", default=FOLDER_TITLE)
    pusher.add_argument("--no-datasources", action="store_true", help="push dashboards only")
    pusher.add_argument("--clickhouse-host", default="clickhouse", help="as Grafana reaches it")
    pusher.add_argument("--clickhouse-port", type=int, default=9000)
    pusher.add_argument("--clickhouse-protocol", choices=("native", "http"), default="native")
    pusher.add_argument("--clickhouse-user", default="default")
    pusher.add_argument("--clickhouse-password", default="")
    pusher.add_argument("--database", default="default", help="database of the meshlens tables")
    pusher.add_argument("--jaeger-url", default="http://analytics:8686/jaeger")
    pusher.add_argument("--jaeger-token", default="", help="viewer token for the Jaeger API")
    pusher.add_argument("--timeout", type=float, default=10.0, help="seconds per API call")
    pusher.set_defaults(run=_run_push)

    sql = commands.add_parser("sql", help="print every panel query with macros expanded")
    sql.add_argument("--from", dest="from_s", type=float, help="epoch seconds (default: now-1h)")
    sql.add_argument("--to", dest="to_s", type=float, help="epoch seconds (default: now)")
    sql.add_argument("--interval", type=float, default=60.0, help="panel interval in seconds")
    sql.add_argument("--var", action="append", default=[], help="NAME=VALUE[,VALUE...]")
    sql.set_defaults(run=_run_sql)


def _token(args: argparse.Namespace) -> str:
    if args.token is not None:
        return str(args.token).strip()
    return Path(args.token_file).read_text().strip()


def _run_push(args: argparse.Namespace) -> int:
    try:
        options = DatasourceOptions(
            clickhouse_host=args.clickhouse_host,
            clickhouse_port=args.clickhouse_port,
            clickhouse_protocol=args.clickhouse_protocol,
            clickhouse_user=args.clickhouse_user,
            clickhouse_password=args.clickhouse_password,
            database=args.database,
            jaeger_url=args.jaeger_url,
            jaeger_token=args.jaeger_token,
        )
        api = grafana_api(args.grafana, _token(args), timeout_s=args.timeout)
        result = push(
            api,
            options,
            folder_uid=args.folder_uid,
            folder_title=args.folder_title,
            with_datasources=not args.no_datasources,
        )
    except (ValueError, OSError, GrafanaApiError) as exc:
        print(f"error: dashboards push: {exc}", file=sys.stderr)
        return 1
    for uid, action in result.datasources.items():
        print(f"datasource {uid}: {action}")
    print(f"folder {args.folder_uid}: {result.folder}")
    for uid, action in result.dashboards.items():
        print(f"dashboard {uid}: {action}")
    return 0


def _variables(pairs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise MacroError(f"--var must be NAME=VALUE, got {pair!r}")
        out[name] = value.split(",")
    return out


def _run_sql(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        window = TimeRange(
            from_s=now - 3600 if args.from_s is None else args.from_s,
            to_s=now if args.to_s is None else args.to_s,
            interval_s=args.interval,
        )
        given = _variables(args.var)
        for dashboard in load_dashboards():
            for query in queries(dashboard):
                defaults = {"service": ["frontend"], "min_duration_ms": ["0"], "trace_id": [""]}
                sql = expand(query.sql, window, {**defaults, **given})
                print(f"-- {query.key}\n{sql};\n")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
