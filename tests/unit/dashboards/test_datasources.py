"""Datasource bodies for the API and the provisioning file describe the same two datasources."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dashboards.catalog import DASHBOARD_DIR
from dashboards.datasources import CLICKHOUSE_UID, JAEGER_UID, DatasourceOptions, datasources

PROVISIONING = DASHBOARD_DIR / "provisioning"


def test_provisioning_file_equals_what_push_sends_with_env_placeholders() -> None:
    document = yaml.safe_load((PROVISIONING / "datasources" / "meshlens.yaml").read_text())
    options = DatasourceOptions(
        clickhouse_password="${CLICKHOUSE_PASSWORD}", jaeger_token="${MESHLENS_VIEWER_TOKEN}"
    )
    assert document["apiVersion"] == 1
    assert document["datasources"] == datasources(options)


def test_clickhouse_uses_default_database_key_and_otel_mode() -> None:
    [clickhouse, jaeger] = datasources(DatasourceOptions(database="otel"))
    assert clickhouse["uid"] == CLICKHOUSE_UID and jaeger["uid"] == JAEGER_UID
    data = clickhouse["jsonData"]
    assert data["defaultDatabase"] == "otel" and "database" not in data
    assert data["traces"]["otelEnabled"] and data["traces"]["durationUnit"] == "nanoseconds"
    assert data["traces"]["traceTimestampTableSuffix"] == "_trace_id_ts"
    assert "secureJsonData" not in jaeger  # no token given: no auth header


def test_jaeger_token_goes_to_secure_json_data_only() -> None:
    [_, jaeger] = datasources(DatasourceOptions(jaeger_token="t0k3n-abcdefghijkl"))
    assert jaeger["jsonData"]["httpHeaderName1"] == "Authorization"
    assert jaeger["secureJsonData"] == {"httpHeaderValue1": "Bearer t0k3n-abcdefghijkl"}
    assert "t0k3n" not in repr(jaeger["jsonData"])


def test_bad_options_list_every_problem() -> None:
    with pytest.raises(ValueError) as info:
        DatasourceOptions(clickhouse_port=0, clickhouse_protocol="grpc", jaeger_url="x")
    message = str(info.value)
    assert "port" in message and "protocol" in message and "jaeger url" in message


def test_dashboard_provider_points_at_the_mounted_dashboard_folder() -> None:
    document = yaml.safe_load((PROVISIONING / "dashboards" / "meshlens.yaml").read_text())
    [provider] = document["providers"]
    assert provider["type"] == "file" and provider["folderUid"] == "meshlens"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/meshlens"
    assert Path(DASHBOARD_DIR).is_dir()
