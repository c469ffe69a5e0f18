"""The Jaeger API through the ASGI app, checked field by field against INTERFACES.md section 4."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.unit.analytics.controlplane.helpers import OPERATOR_TOKEN
from tests.unit.analytics.traces.helpers import (
    MS,
    NOW,
    T0,
    TRACE_A,
    TRACE_B,
    TRACE_C,
    VIEWER,
    Api,
    S,
)

US_WINDOW = {"start": str((T0 - 10) * 1_000_000), "end": str((T0 + 590) * 1_000_000)}


def envelope(body: dict[str, Any]) -> Any:
    assert set(body) == {"data", "total", "limit", "offset", "errors"}
    assert body["limit"] == 0 and body["offset"] == 0 and body["errors"] is None
    return body["data"]


async def get(api: Api, path: str, **params: Any) -> Any:
    response = await api.client.get(path, headers=VIEWER, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_services_and_both_operations_routes(api: Api) -> None:
    services = await get(api, "/jaeger/api/services")
    assert envelope(services) == ["batch", "orders", "web"]
    assert services["total"] == 3
    names = await get(api, "/jaeger/api/services/web/operations")
    assert envelope(names) == ["GET", "GET /checkout", "GET /home"]
    ops = envelope(await get(api, "/jaeger/api/operations", service="web"))
    assert ops == [
        {"name": "GET", "spanKind": "client"},
        {"name": "GET /checkout", "spanKind": "server"},
        {"name": "GET /home", "spanKind": "server"},
    ]
    servers = envelope(await get(api, "/jaeger/api/operations", service="web", spanKind="server"))
    assert [o["name"] for o in servers] == ["GET /checkout", "GET /home"]


async def test_operations_without_service_is_400_in_jaeger_shape(api: Api) -> None:
    response = await api.client.get("/jaeger/api/operations", headers=VIEWER)
    assert response.status_code == 400
    assert response.json() == {
        "data": None,
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": [{"code": 400, "msg": "parameter 'service' is required"}],
    }


async def test_trace_by_id_has_jaeger_shapes_and_units(api: Api) -> None:
    body = await get(api, f"/jaeger/api/traces/{TRACE_A}")
    [trace] = envelope(body)
    assert body["total"] == 1
    assert set(trace) == {"traceID", "spans", "processes", "warnings"}
    assert trace["traceID"] == TRACE_A and trace["warnings"] is None
    root, client, server, db = trace["spans"]
    assert set(root) == {
        "traceID",
        "spanID",
        "operationName",
        "references",
        "startTime",
        "duration",
        "tags",
        "logs",
        "processID",
        "warnings",
    }
    assert root["spanID"] == "a000000000000001" and root["operationName"] == "GET /checkout"
    assert root["references"] == []
    assert root["startTime"] == T0 * 1_000_000  # µs
    assert root["duration"] == 120_000  # µs
    assert {"key": "span.kind", "type": "string", "value": "server"} in root["tags"]
    assert {"key": "http.response.status_code", "type": "int64", "value": 500} in root["tags"]
    assert {"key": "w3c.tracestate", "type": "string", "value": "vendor=x"} in root["tags"]
    assert client["references"] == [
        {"refType": "CHILD_OF", "traceID": TRACE_A, "spanID": "a000000000000001"}
    ]
    assert {"key": "error", "type": "bool", "value": True} in client["tags"]
    assert {"key": "otel.status_code", "type": "string", "value": "ERROR"} in client["tags"]
    assert {"key": "peer.ratio", "type": "float64", "value": 0.5} in client["tags"]
    assert {"key": "retry", "type": "bool", "value": True} in client["tags"]
    assert {"key": "big", "type": "int64", "value": "9007199254740993"} in server["tags"]
    assert {"key": "otel.status_description", "type": "string", "value": "db down"} in server[
        "tags"
    ]
    assert server["references"][1] == {
        "refType": "FOLLOWS_FROM",
        "traceID": TRACE_B,
        "spanID": "b000000000000001",
    }
    assert server["logs"] == [
        {
            "timestamp": (T0 * S + 50 * MS) // 1000,
            "fields": [
                {"key": "event", "type": "string", "value": "exception"},
                {"key": "exception.message", "type": "string", "value": "boom"},
            ],
        }
    ]
    assert {"key": "otel.scope.name", "type": "string", "value": "db-lib"} in db["tags"]
    assert root["processID"] == client["processID"] == "p1"
    assert server["processID"] == db["processID"] == "p2"
    assert trace["processes"] == {
        "p1": {
            "serviceName": "web",
            "tags": [
                {"key": "host.name", "type": "string", "value": "node-1"},
                {"key": "process.pid", "type": "int64", "value": 42},
            ],
        },
        "p2": {"serviceName": "orders", "tags": []},
    }


async def test_64_bit_trace_ids_render_as_16_hex_digits(api: Api) -> None:
    [trace] = envelope(await get(api, "/jaeger/api/traces/1234567890abcdef"))
    assert trace["traceID"] == "1234567890abcdef"
    assert trace["spans"][0]["traceID"] == "1234567890abcdef"
    assert TRACE_C.endswith(trace["traceID"])


async def test_trace_by_id_accepts_grafana_millisecond_window(api: Api) -> None:
    # Grafana sends ms; the last span starts at T0 + 20 ms, inside the (inclusive) end.
    inside = {"start": str(T0 * 1000 - 1000), "end": str(T0 * 1000 + 20)}
    [trace] = envelope(await get(api, f"/jaeger/api/traces/{TRACE_A}", **inside))
    assert [s["spanID"] for s in trace["spans"]] == [f"a00000000000000{i}" for i in range(1, 5)]
    micro = {"start": str(T0 * 1_000_000 - 1), "end": str((T0 + 1) * 1_000_000)}
    assert len(envelope(await get(api, f"/jaeger/api/traces/{TRACE_A}", **micro))[0]["spans"]) == 4
    outside = {"start": str((T0 + 10) * 1000), "end": str((T0 + 20) * 1000)}
    response = await api.client.get(f"/jaeger/api/traces/{TRACE_A}", headers=VIEWER, params=outside)
    assert response.status_code == 404


async def test_unknown_trace_is_404_with_jaeger_error(api: Api) -> None:
    response = await api.client.get(f"/jaeger/api/traces/{'e' * 32}", headers=VIEWER)
    assert response.status_code == 404
    assert response.json() == {
        "data": None,
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": [{"code": 404, "msg": "trace not found"}],
    }


async def test_search_with_tags_durations_and_limit(api: Api) -> None:
    by_tag = await get(
        api,
        "/jaeger/api/traces",
        service="orders",
        tags=json.dumps({"customer.tier": "gold"}),
        **US_WINDOW,
    )
    assert [t["traceID"] for t in envelope(by_tag)] == ["1234567890abcdef"]
    errors = await get(
        api, "/jaeger/api/traces", service="web", tags='{"error":"true"}', **US_WINDOW
    )
    assert [t["traceID"] for t in envelope(errors)] == [TRACE_A]
    assert len(envelope(errors)[0]["spans"]) == 4  # whole traces, not only the matching span
    slow = await get(
        api,
        "/jaeger/api/traces",
        service="orders",
        minDuration="50ms",
        maxDuration="1.5s",
        **US_WINDOW,
    )
    assert [t["traceID"] for t in envelope(slow)] == [TRACE_A]
    op = await get(
        api, "/jaeger/api/traces", service="web", operation="GET /home", lookback="1h", **US_WINDOW
    )
    assert [t["traceID"] for t in envelope(op)] == [TRACE_B]
    limited = await get(api, "/jaeger/api/traces", service="batch", limit="3", **US_WINDOW)
    assert limited["total"] == 3
    resource = await get(
        api, "/jaeger/api/traces", service="web", tag="host.name:node-1", **US_WINDOW
    )
    assert [t["traceID"] for t in envelope(resource)] == [TRACE_A]


async def test_search_defaults_to_the_last_48_hours(api: Api) -> None:
    found = envelope(await get(api, "/jaeger/api/traces", service="web"))
    assert {t["traceID"] for t in found} == {TRACE_A, TRACE_B}
    assert NOW - T0 < 48 * 3600


async def test_search_by_trace_ids(api: Api) -> None:
    response = await api.client.get(
        f"/jaeger/api/traces?traceID={TRACE_B}&traceID={TRACE_A}", headers=VIEWER
    )
    assert [t["traceID"] for t in envelope(response.json())] == [TRACE_B, TRACE_A]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "parameter 'service' is required"),
        ({"service": "web", "tags": "{not json"}, "malformed 'tags'"),
        ({"service": "web", "minDuration": "10 parsecs"}, "minDuration"),
        ({"service": "web", "minDuration": "2s", "maxDuration": "1s"}, "maxDuration"),
        ({"service": "web", "start": "yesterday"}, "'start'"),
        ({"service": "web", "limit": "many"}, "'limit'"),
        ({"service": "web", "tag": "nocolon"}, "key:value"),
    ],
)
async def test_bad_search_parameters_are_400(
    api: Api, params: dict[str, str], fragment: str
) -> None:
    response = await api.client.get("/jaeger/api/traces", headers=VIEWER, params=params)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["code"] == 400 and fragment in error["msg"]


async def test_dependencies_from_sidecar_client_spans_in_ms_window(api: Api) -> None:
    deps = await get(
        api, "/jaeger/api/dependencies", endTs=str(NOW * 1000), lookback=str(3_600_000)
    )
    assert envelope(deps) == [{"parent": "web", "child": "orders", "callCount": 1}]
    before = await get(
        api, "/jaeger/api/dependencies", endTs=str((T0 - 60) * 1000), lookback="60000"
    )
    assert envelope(before) == []
    bad = await api.client.get("/jaeger/api/dependencies?lookback=-5", headers=VIEWER)
    assert bad.status_code == 400


async def test_v3_services_operations_and_trace(api: Api) -> None:
    assert await get(api, "/jaeger/api/v3/services") == {"services": ["batch", "orders", "web"]}
    ops = await get(api, "/jaeger/api/v3/operations", service="orders", span_kind="client")
    assert ops == {"operations": [{"name": "SELECT", "spanKind": "client"}]}
    body = await get(api, f"/jaeger/api/v3/traces/{TRACE_A}")
    resource_spans = body["result"]["resourceSpans"]
    assert [r["resource"]["attributes"][0] for r in resource_spans] == [
        {"key": "service.name", "value": {"stringValue": "web"}},
        {"key": "service.name", "value": {"stringValue": "orders"}},
    ]
    web = resource_spans[0]
    assert {"key": "process.pid", "value": {"intValue": "42"}} in web["resource"]["attributes"]
    root = web["scopeSpans"][0]["spans"][0]
    assert root["traceId"] == TRACE_A and "parentSpanId" not in root
    assert root["kind"] == 2 and root["status"] == {}
    assert root["startTimeUnixNano"] == str(T0 * S)
    assert root["endTimeUnixNano"] == str(T0 * S + 120 * MS)
    orders_scopes = resource_spans[1]["scopeSpans"]
    assert [s["scope"] for s in orders_scopes] == [
        {"name": "meshlens-test", "version": "0"},
        {"name": "db-lib", "version": "1.2"},
    ]
    server = orders_scopes[0]["spans"][0]
    assert server["status"] == {"code": 2, "message": "db down"}
    assert server["parentSpanId"] == "a000000000000002"
    assert server["events"][0]["timeUnixNano"] == str(T0 * S + 50 * MS)
    assert server["links"] == [{"traceId": TRACE_B, "spanId": "b000000000000001", "attributes": []}]


async def test_v3_trace_window_in_rfc3339(api: Api) -> None:
    window = {"start_time": "2026-05-28T20:26:39.999999999Z", "endTime": "2026-05-28T20:26:41Z"}
    body = await get(api, f"/jaeger/api/v3/traces/{TRACE_A}", **window)
    assert len(body["result"]["resourceSpans"]) == 2
    missing = await api.client.get(
        f"/jaeger/api/v3/traces/{TRACE_A}",
        headers=VIEWER,
        params={"startTime": "2026-05-29T00:00:00Z"},
    )
    assert missing.status_code == 404
    assert missing.json() == {"error": {"httpCode": 404, "message": "trace not found"}}


@pytest.mark.parametrize("style", ["camel", "snake"])
async def test_v3_search_accepts_camel_and_snake_case(api: Api, style: str) -> None:
    names = {
        "camel": (
            "query.serviceName",
            "query.startTimeMin",
            "query.startTimeMax",
            "query.attributes",
        ),
        "snake": (
            "query.service_name",
            "query.start_time_min",
            "query.start_time_max",
            "query.attributes",
        ),
    }[style]
    params = dict(
        zip(
            names,
            ("orders", "2026-05-28T20:26:00Z", "2026-05-28T20:40:00Z", '{"customer.tier":"gold"}'),
            strict=True,
        )
    )
    body = await get(api, "/jaeger/api/v3/traces", **params)
    [resource] = body["result"]["resourceSpans"]
    assert resource["scopeSpans"][0]["spans"][0]["traceId"] == TRACE_C


async def test_v3_search_errors(api: Api) -> None:
    none = await api.client.get(
        "/jaeger/api/v3/traces",
        headers=VIEWER,
        params={
            "query.service_name": "nobody",
            "query.start_time_min": "2026-05-28T20:26:00Z",
            "query.start_time_max": "2026-05-28T20:40:00Z",
        },
    )
    assert none.status_code == 404
    assert none.json() == {"error": {"httpCode": 404, "message": "No traces found"}}
    missing = await api.client.get("/jaeger/api/v3/traces", headers=VIEWER)
    assert missing.status_code == 400
    assert "start_time_min" in missing.json()["error"]["message"]


async def test_jaeger_api_needs_a_reader_token_bearer_or_basic(api: Api) -> None:
    assert (await api.client.get("/jaeger/api/services")).status_code == 401
    wrong = await api.client.get("/jaeger/api/services", headers={"authorization": "Bearer x" * 3})
    assert wrong.status_code == 403
    assert wrong.json()["errors"][0]["code"] == 403
    basic = base64.b64encode(f"grafana:{OPERATOR_TOKEN}".encode()).decode()
    ok = await api.client.get("/jaeger/api/services", headers={"authorization": f"Basic {basic}"})
    assert ok.status_code == 200
    v3 = await api.client.get("/jaeger/api/v3/services")
    assert v3.status_code == 401 and v3.json()["error"]["httpCode"] == 401
