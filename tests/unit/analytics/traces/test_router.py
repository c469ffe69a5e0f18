from __future__ import annotations

from typing import Any

import pytest

from tests.unit.analytics.traces.helpers import (
    MANY,
    MS,
    OPERATOR,
    T0,
    TRACE_A,
    TRACE_B,
    TRACE_C,
    VIEWER,
    Api,
    S,
    iso,
)

WINDOW = {"start": iso(T0 - 10), "end": iso(T0 + 590)}


async def search(api: Api, **params: Any) -> dict[str, Any]:
    response = await api.client.get("/api/v1/traces", headers=VIEWER, params={**WINDOW, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [t["trace_id"] for t in body["traces"]]


async def test_search_by_service_and_operation_returns_trace_summaries(api: Api) -> None:
    body = await search(api, service="orders", operation="POST /orders")
    assert ids(body) == [TRACE_C, TRACE_A]  # newest match first
    a = body["traces"][1]
    assert a == {
        "trace_id": TRACE_A,
        "root_service": "web",
        "root_name": "GET /checkout",
        "start_time_unix_nano": T0 * S,
        "duration_ns": 120 * MS,
        "duration_ms": 120.0,
        "span_count": 4,
        "error_count": 2,
        "services": ["orders", "web"],
    }
    assert body["next_cursor"] is None


async def test_search_filters_on_span_status_kind_and_span_duration(api: Api) -> None:
    assert ids(await search(api, status="error")) == [TRACE_A]
    assert ids(await search(api, service="web", span_kind="client")) == [TRACE_A]
    assert ids(await search(api, service="orders", min_duration="31ms")) == [TRACE_A]
    assert ids(await search(api, service="orders", max_duration="30ms")) == [TRACE_C]
    assert ids(await search(api, service="web", min_duration="100ms", max_duration="100ms")) == [
        TRACE_A
    ]


async def test_search_filters_on_whole_trace_duration(api: Api) -> None:
    # TRACE_A's orders span lasts 80 ms but the trace 120 ms; TRACE_C lasts 30 ms.
    body = await search(api, service="orders", min_trace_duration="100ms")
    assert ids(body) == [TRACE_A]
    assert ids(await search(api, service="orders", max_trace_duration="50ms")) == [TRACE_C]
    assert ids(await search(api, service="orders", min_trace_duration="1s")) == []


async def test_search_attribute_filters_equal_not_equal_and_regex(api: Api) -> None:
    assert ids(await search(api, attr="customer.tier=gold")) == [TRACE_C]
    assert ids(await search(api, attr="http.response.status_code=200")) == [TRACE_B]
    assert ids(await search(api, service="orders", attr="customer.tier!=gold")) == [TRACE_A]
    assert ids(await search(api, attr="http.route=~^/ord")) == [TRACE_A]
    # Any span of the trace may match: TRACE_A's SELECT span has no http.route at all.
    assert ids(await search(api, service="orders", attr="http.route!~^/ord")) == [TRACE_C, TRACE_A]
    server = await search(api, service="orders", operation="POST /orders", attr="http.route!~^/o")
    assert ids(server) == [TRACE_C]
    both = await search(api, attr=["http.response.status_code=~^[25]", "http.request.method=GET"])
    assert ids(both) == [TRACE_A]


async def test_attribute_values_are_parameters_not_sql(api: Api) -> None:
    body = await search(api, attr="customer.tier=gold' OR '1'='1")
    assert ids(body) == []


async def test_search_time_range_excludes_traces_outside_it(api: Api) -> None:
    body = await search(api, start=iso(T0 + 30), end=iso(T0 + 90))
    assert ids(body) == [TRACE_B]


async def test_cursor_pages_through_every_trace_once(api: Api) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"service": "batch", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        body = await search(api, **params)
        seen += ids(body)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == MANY and len(set(seen)) == MANY
    starts = [int(t, 16) for t in seen]
    assert starts == sorted(starts, reverse=True)


async def test_cursor_paging_with_a_trace_duration_filter(api: Api) -> None:
    first = await search(api, service="batch", max_trace_duration="1ms", limit=20)
    second = await search(
        api, service="batch", max_trace_duration="1ms", cursor=first["next_cursor"]
    )
    assert len(first["traces"]) == 20 and len(second["traces"]) == MANY - 20
    assert not set(ids(first)) & set(ids(second))
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"attr": "http.route=~(ab"}, "not a valid re2 regex"),
        ({"attr": "=x"}, "must be key=value"),
        ({"min_duration": "fast"}, "min_duration"),
        ({"min_trace_duration": "2s", "max_trace_duration": "1s"}, "max trace duration"),
        ({"status": "broken"}, "status must be one of"),
        ({"span_kind": "sideways"}, "span kind must be one of"),
        ({"cursor": "garbage"}, "cursor"),
        ({"start": iso(T0 + 100), "end": iso(T0)}, "end must be after start"),
    ],
)
async def test_bad_search_parameters_answer_422_with_a_message(
    api: Api, params: dict[str, Any], fragment: str
) -> None:
    response = await api.client.get("/api/v1/traces", headers=VIEWER, params={**WINDOW, **params})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert fragment in body["message"]


async def test_limit_out_of_range_is_422(api: Api) -> None:
    response = await api.client.get("/api/v1/traces", headers=VIEWER, params={"limit": 0})
    assert response.status_code == 422
    assert "limit" in response.text


async def test_trace_by_id_returns_every_span_with_attributes_events_links(api: Api) -> None:
    response = await api.client.get(f"/api/v1/traces/{TRACE_A.upper()}", headers=VIEWER)
    assert response.status_code == 200
    body = response.json()
    assert body["trace_id"] == TRACE_A
    spans = body["spans"]
    assert [s["span_id"] for s in spans] == [f"a00000000000000{i}" for i in range(1, 5)]
    orders = spans[2]
    assert orders["parent_span_id"] == "a000000000000002"
    assert orders["status_code"] == "Error" and orders["status_message"] == "db down"
    assert orders["start_time_unix_nano"] == T0 * S + 10 * MS
    assert orders["duration_ns"] == 80 * MS
    assert orders["events"] == [
        {
            "time_unix_nano": T0 * S + 50 * MS,
            "name": "exception",
            "attributes": {"exception.message": "boom"},
        }
    ]
    assert orders["links"][0]["trace_id"] == TRACE_B
    assert spans[0]["resource_attributes"]["host.name"] == "node-1"
    assert spans[3]["scope_name"] == "db-lib"


async def test_short_trace_ids_are_zero_padded(api: Api) -> None:
    response = await api.client.get("/api/v1/traces/1234567890abcdef", headers=VIEWER)
    assert response.status_code == 200
    assert response.json()["trace_id"] == TRACE_C


async def test_trace_by_id_window_bounds_the_read(api: Api) -> None:
    params = {"start": iso(T0 + 1)}
    response = await api.client.get(f"/api/v1/traces/{TRACE_A}", headers=VIEWER, params=params)
    assert response.status_code == 404


async def test_unknown_trace_is_404_and_bad_id_422(api: Api) -> None:
    missing = await api.client.get(f"/api/v1/traces/{'f' * 32}", headers=VIEWER)
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    bad = await api.client.get("/api/v1/traces/not-hex", headers=VIEWER)
    assert bad.status_code == 422
    assert "hex" in bad.json()["message"]


async def test_services_and_operations(api: Api) -> None:
    services = await api.client.get("/api/v1/services", headers=VIEWER)
    assert services.json() == {"services": ["batch", "orders", "web"]}
    ops = await api.client.get("/api/v1/services/web/operations", headers=VIEWER)
    assert ops.json() == [
        {"name": "GET", "span_kind": "Client"},
        {"name": "GET /checkout", "span_kind": "Server"},
        {"name": "GET /home", "span_kind": "Server"},
    ]
    servers = await api.client.get(
        "/api/v1/services/web/operations", headers=VIEWER, params={"span_kind": "server"}
    )
    assert [o["name"] for o in servers.json()] == ["GET /checkout", "GET /home"]
    old = await api.client.get(
        "/api/v1/services", headers=VIEWER, params={"start": iso(T0 - 100), "end": iso(T0 - 50)}
    )
    assert old.json() == {"services": []}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/traces",
        f"/api/v1/traces/{TRACE_A}",
        "/api/v1/services",
        "/api/v1/services/web/operations",
    ],
)
async def test_reads_need_a_token(api: Api, path: str) -> None:
    missing = await api.client.get(path)
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthenticated"
    wrong = await api.client.get(path, headers={"authorization": "Bearer not-a-valid-token-at-all"})
    assert wrong.status_code == 403
    operator = await api.client.get(path, headers=OPERATOR)
    assert operator.status_code == 200


async def test_openapi_documents_the_trace_routes(api: Api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    for path in ("/api/v1/traces", "/api/v1/traces/{trace_id}", "/api/v1/services"):
        assert path in paths
    assert (await api.client.get("/docs")).status_code == 200


async def test_times_without_a_zone_are_utc(api: Api) -> None:
    naive = {"start": "2026-05-28T20:27:00", "end": "2026-05-28T20:28:00"}  # T0 + 20 s .. + 80 s
    assert ids(await search(api, **naive)) == [TRACE_B]
