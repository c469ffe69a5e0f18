"""The Grafana datasources our dashboards use: ClickHouse (OTel mode) and meshlens' Jaeger API.

`datasources(options)` gives the bodies `meshlens dashboards push` sends to Grafana's HTTP API; the
file `provisioning/datasources/meshlens.yaml` declares the same two for file provisioning (a test
keeps them in step). Dashboards refer to them by the fixed uids below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "CLICKHOUSE_TYPE",
    "CLICKHOUSE_UID",
    "JAEGER_TYPE",
    "JAEGER_UID",
    "DatasourceOptions",
    "datasources",
]

CLICKHOUSE_UID = "meshlens-clickhouse"
CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
JAEGER_UID = "meshlens-jaeger"
JAEGER_TYPE = "jaeger"

_PROTOCOLS = ("native", "http")


@dataclass(frozen=True, slots=True)
class DatasourceOptions:
    """Where Grafana reaches ClickHouse and the meshlens Jaeger API (as seen from Grafana)."""

    clickhouse_host: str = "clickhouse"
    clickhouse_port: int = 9000
    clickhouse_protocol: str = "native"
    clickhouse_user: str = "default"
    clickhouse_password: str = ""
    database: str = "default"
    jaeger_url: str = "http://analytics:8686/jaeger"
    # A viewer token sent as `Authorization: Bearer ...` to the Jaeger API ('' = none).
    jaeger_token: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not self.clickhouse_host:
            problems.append("clickhouse host is empty")
        if not 0 < self.clickhouse_port < 65536:
            problems.append(f"clickhouse port {self.clickhouse_port} is not 1..65535")
        if self.clickhouse_protocol not in _PROTOCOLS:
            problems.append(f"clickhouse protocol must be one of {_PROTOCOLS}")
        if not self.database:
            problems.append("database is empty")
        parts = urlsplit(self.jaeger_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"jaeger url {self.jaeger_url!r} is not an http(s) URL")
        if problems:
            raise ValueError("; ".join(problems))


def _clickhouse(options: DatasourceOptions) -> dict[str, Any]:
    db = options.database
    return {
        "name": "meshlens ClickHouse",
        "uid": CLICKHOUSE_UID,
        "type": CLICKHOUSE_TYPE,
        "access": "proxy",
        "isDefault": True,
        "jsonData": {
            "host": options.clickhouse_host,
            "port": options.clickhouse_port,
            "protocol": options.clickhouse_protocol,
            "username": options.clickhouse_user,
            # The plugin reads `defaultDatabase`; `database` is ignored (INTERFACES.md §9.11).
            "defaultDatabase": db,
            "logs": {
                "defaultDatabase": db,
                "defaultTable": "otel_logs",
                "otelEnabled": True,
                "otelVersion": "latest",
            },
            "traces": {
                "defaultDatabase": db,
                "defaultTable": "otel_traces",
                "otelEnabled": True,
                "otelVersion": "latest",
                "durationUnit": "nanoseconds",
                "traceTimestampTableSuffix": "_trace_id_ts",
            },
        },
        "secureJsonData": {"password": options.clickhouse_password},
    }


def _jaeger(options: DatasourceOptions) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "meshlens Jaeger",
        "uid": JAEGER_UID,
        "type": JAEGER_TYPE,
        "access": "proxy",
        "url": options.jaeger_url,
        "isDefault": False,
        "jsonData": {
            "tracesToLogsV2": {},
            "nodeGraph": {"enabled": True},
        },
    }
    if options.jaeger_token:
        body["jsonData"]["httpHeaderName1"] = "Authorization"
        body["secureJsonData"] = {"httpHeaderValue1": f"Bearer {options.jaeger_token}"}
    return body


def datasources(options: DatasourceOptions) -> list[dict[str, Any]]:
    """The datasource bodies for Grafana's API (`POST /api/datasources`), ClickHouse first."""
    return [_clickhouse(options), _jaeger(options)]
