"""The dashboard files shipped in this package and the SQL queries their panels and variables run.

Each `*.json` next to this module is one Grafana dashboard, provisioned as-is (Grafana's file
provider reads this folder) and pushed unchanged by `meshlens dashboards push`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARD_DIR", "Query", "dashboard_files", "load_dashboards", "queries"]

DASHBOARD_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Query:
    """One SQL query of a dashboard: a panel target or a query variable."""

    dashboard_uid: str
    panel_title: str
    panel_type: str  # panel type, or "variable" for a template variable's query
    ref_id: str  # target refId, or the variable's name
    sql: str
    format: int  # grafana/sqlds format: 0 time series, 1 table, 3 trace

    @property
    def key(self) -> str:
        return f"{self.dashboard_uid}/{self.panel_title}/{self.ref_id}"


def dashboard_files(directory: Path = DASHBOARD_DIR) -> list[Path]:
    """The dashboard JSON files, sorted by name."""
    return sorted(directory.glob("*.json"))


def load_dashboards(directory: Path = DASHBOARD_DIR) -> list[dict[str, Any]]:
    """Every dashboard as parsed JSON; ValueError naming the file if one is not valid JSON."""
    out = []
    for path in dashboard_files(directory):
        try:
            dashboard = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path.name}: not valid JSON: {exc}") from exc
        if not isinstance(dashboard, dict) or not dashboard.get("uid"):
            raise ValueError(f"{path.name}: a dashboard must be an object with a uid")
        out.append(dashboard)
    return out


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # panels inside collapsed rows


def queries(dashboard: dict[str, Any]) -> list[Query]:
    """The SQL of every panel target and query variable of `dashboard`."""
    uid = dashboard["uid"]
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, dict):
            found.append(Query(uid, "variables", "variable", variable["name"], query["rawSql"], 1))
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "rawSql" in target:
                found.append(
                    Query(
                        uid,
                        panel["title"],
                        panel["type"],
                        target["refId"],
                        target["rawSql"],
                        int(target.get("format", 1)),
                    )
                )
    return found
