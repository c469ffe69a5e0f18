"""The dashboard files: valid Grafana JSON wired to our datasources, reading tables we create."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analytics.anomalies.repository import TABLE as INCIDENTS_TABLE
from analytics.controlplane.schema import DDL as CONTROL_PLANE_DDL
from analytics.tuning.repository import PINS, SUGGESTIONS
from collector.schema import SchemaOptions
from collector.schema.migrations import MIGRATIONS
from dashboards.catalog import DASHBOARD_DIR, dashboard_files, load_dashboards, queries
from dashboards.datasources import CLICKHOUSE_TYPE, CLICKHOUSE_UID

DASHBOARDS = load_dashboards()


_TABLE_REF = r'(?:\bFROM|(?<!ARRAY )\bJOIN)\s+"?(\w+)\b"?(?!\s*\()'


def _schema_tables() -> set[str]:
    """Tables the store's migrations create, plus the analysis engine's incidents table, the
    control plane's tables and the tuning loop's."""
    ddl = "\n".join(s for m in MIGRATIONS for s in m.statements(SchemaOptions()))
    tables = re.findall(r"CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS `\w+`\.`(\w+)`", ddl)
    control_plane = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", "\n".join(CONTROL_PLANE_DDL))
    assert len(control_plane) >= 4
    return {*tables, INCIDENTS_TABLE, *control_plane, SUGGESTIONS, PINS}


def test_each_file_is_one_dashboard_with_a_unique_stable_uid() -> None:
    uids = [d["uid"] for d in DASHBOARDS]
    assert len(uids) == len(set(uids)) == len(dashboard_files()) >= 3
    for dashboard in DASHBOARDS:
        assert dashboard["uid"].startswith("meshlens-") and len(dashboard["uid"]) <= 40
        assert dashboard["id"] is None
        assert "meshlens" in dashboard["tags"]
        assert isinstance(dashboard["schemaVersion"], int)


def test_panel_ids_are_unique_and_fit_the_grid() -> None:
    for dashboard in DASHBOARDS:
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), dashboard["uid"]
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert 1 <= grid["w"] <= 24 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_targets_the_clickhouse_datasource_by_uid() -> None:
    for dashboard in DASHBOARDS:
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"] == {"type": CLICKHOUSE_TYPE, "uid": CLICKHOUSE_UID}
                assert target["editorType"] == "sql"


def test_node_graph_panels_have_nodes_and_edges_queries() -> None:
    graphs = [p for d in DASHBOARDS for p in d["panels"] if p["type"] == "nodeGraph"]
    assert graphs
    for panel in graphs:
        assert sorted(t["refId"] for t in panel["targets"]) == ["edges", "nodes"]
        assert all(t["format"] == 1 for t in panel["targets"])


def test_trace_view_uses_the_trace_format_in_otel_trace_id_mode() -> None:
    [panel] = [p for d in DASHBOARDS for p in d["panels"] if p["type"] == "traces"]
    [target] = panel["targets"]
    assert target["format"] == 3 and target["queryType"] == "traces"
    meta = target["builderOptions"]["meta"]
    assert meta["isTraceIdMode"] is True and meta["otelEnabled"] is True
    assert "otel_traces_trace_id_ts" in target["rawSql"]


def test_queries_read_only_tables_the_schema_creates() -> None:
    tables = _schema_tables()
    assert {"otel_traces", "meshlens_edges_1m"} <= tables
    for dashboard in DASHBOARDS:
        for query in queries(dashboard):
            # (not trim(BOTH '{}' FROM decodeURLComponent(...)): a name before "(" is a call
            used = set(re.findall(_TABLE_REF, query.sql))
            assert used and used <= tables, (query.key, used - tables)


def test_queries_variables_are_defined_by_the_dashboard() -> None:
    from dashboards.macros import variable_names

    for dashboard in DASHBOARDS:
        defined = {v["name"] for v in dashboard["templating"]["list"]}
        for query in queries(dashboard):
            assert variable_names(query.sql) <= defined, query.key


def test_load_dashboards_names_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_dashboards(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"title": "no uid"}))
    with pytest.raises(ValueError, match="uid"):
        load_dashboards(tmp_path)


def test_dashboard_dir_is_the_package_folder() -> None:
    assert (DASHBOARD_DIR / "catalog.py").exists()
