"""Every dashboard query, macros expanded, runs on the real schema and returns what its panel needs.

The embedded store is filled with a shop like the demo's (frontend -> catalog, cart, checkout ->
payment, shipping; inventory shared by catalog and checkout; payment calls an external fraud API
that sends no spans): for each call a CLIENT span from the caller's sidecar with meshlens.upstream /
meshlens.route and a SERVER span on the callee, payment failing every 7th journey. Spans are
inserted with store.insert, so the exporter tables' views fill the per-minute aggregates.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from analytics.anomalies.detectors import Anomaly
from analytics.anomalies.repository import IncidentRepository
from analytics.controlplane.audit import AuditLog
from analytics.controlplane.auth import Principal
from analytics.controlplane.policies import PolicyStore
from analytics.controlplane.repository import AckRow, ControlPlaneRepository
from analytics.rca.ranking import Candidate
from analytics.tuning.repository import SuggestionRecord, TuningRepository
from collector.store import Rows, Store, open_store
from dashboards.catalog import Query, load_dashboards, queries
from dashboards.macros import TimeRange, expand, variable_names
from demo.topology import SHOP
from tests.conftest import Event, Span, trace_columns

REPO = Path(__file__).resolve().parents[2]
T0_S = 29_916_667 * 60  # 2026-11-18 11:07 UTC, a whole minute
JOURNEYS = 42
CALLS = {
    "frontend": [("catalog", "list"), ("cart", "get"), ("checkout", "buy")],
    "catalog": [("inventory", "stock")],
    "checkout": [("payment", "charge"), ("shipping", "quote"), ("inventory", "reserve")],
    "payment": [("fraud-api", "score")],
}
SERVICES = {"frontend", "catalog", "cart", "checkout", "payment", "shipping", "inventory"}
EDGES = {(caller, callee) for caller, calls in CALLS.items() for callee, _ in calls}
RANGE = TimeRange(from_s=T0_S - 60, to_s=T0_S + JOURNEYS * 5 + 120, interval_s=60)
NUMBER = (int, float)


class _Trace:
    def __init__(self, journey: int) -> None:
        self.trace_id = f"{journey + 1:032x}"
        self.journey = journey
        self.spans: list[Span] = []
        self._next = 0

    def span_id(self) -> str:
        self._next += 1
        return f"{self.journey:08x}{self._next:08x}"


def _fails(journey: int, callee: str) -> bool:
    return callee == "payment" and journey % 7 == 3


def _serve(trace: _Trace, service: str, route: str, parent: str, start_ns: int) -> int:
    """A SERVER span on `service` and, below it, the calls it makes; returns its duration."""
    span_id = trace.span_id()
    clock = start_ns + 200_000
    for callee, callee_route in CALLS.get(service, []):
        clock += _call(trace, service, callee, callee_route, span_id, clock) + 100_000
    duration = clock - start_ns + 300_000
    failed = _fails(trace.journey, service)
    trace.spans.append(
        Span(
            service=service,
            name=f"GET /{route}",
            kind="Server",
            trace_id=trace.trace_id,
            span_id=span_id,
            parent_span_id=parent,
            start_ns=start_ns,
            duration_ns=duration,
            status="Error" if failed else "Unset",
            attributes={
                "http.request.method": "GET",
                "http.route": f"/{route}",
                "http.response.status_code": "500" if failed else "200",
                "meshlens.route": route,
            },
            resource={"service.name": service, "service.instance.id": f"{service}-0"},
            events=(Event(start_ns + 1000, "exception", {"exception.type": "Boom"}),)
            if failed
            else (),
        )
    )
    return duration


def _call(trace: _Trace, caller: str, callee: str, route: str, parent: str, start_ns: int) -> int:
    """The caller sidecar's CLIENT span and the callee's server side; returns its duration."""
    span_id = trace.span_id()
    if callee == "fraud-api":
        inner = 4_000_000  # an external host: no sidecar, no server span
    else:
        inner = _serve(trace, callee, route, span_id, start_ns + 50_000)
    failed = _fails(trace.journey, callee)
    duration = inner + 100_000
    trace.spans.append(
        Span(
            service=caller,
            name="GET",
            kind="Client",
            trace_id=trace.trace_id,
            span_id=span_id,
            parent_span_id=parent,
            start_ns=start_ns,
            duration_ns=duration,
            status="Error" if failed else "Unset",
            attributes={
                "http.request.method": "GET",
                "http.response.status_code": "500" if failed else "200",
                "server.address": callee,
                "meshlens.upstream": callee,
                "meshlens.route": route,
            },
            scope_name="meshlens-sidecar",
        )
    )
    return duration


def _shop_traces() -> list[_Trace]:
    traces = []
    for journey in range(JOURNEYS):
        trace = _Trace(journey)
        _serve(trace, "frontend", "home", "", (T0_S + journey * 5) * 1_000_000_000)
        traces.append(trace)
    return traces


def _incident() -> dict[str, Any]:
    """An incident record as the analysis engine writes it (AnalyzedIncident.record())."""
    start = dt.datetime.fromtimestamp(T0_S + 60, dt.UTC)
    end = start + dt.timedelta(minutes=3)
    anomaly = Anomaly("checkout->payment", "error_ratio", start, end, 0.14, 0.002, 9.5)
    causes = [
        Candidate("payment", 0.91, 0.4, 1.5, 0.0, 0.2, 6.1, 6, 84, ("errors start in payment",)),
        Candidate("checkout", 0.22, 0.1, 0.3, 1.2, 0.0, 0.3, 0, 84, ("inherits payment errors",)),
    ]
    return {
        "id": "inc-1",
        "start": start,
        "end": end,
        "summary": "error ratio up on checkout->payment",
        "services": ["checkout", "payment"],
        "anomalies": [{**asdict(anomaly), "start": start.isoformat(), "end": end.isoformat()}],
        "root_causes": [asdict(c) for c in causes],
    }


def _suggestion() -> SuggestionRecord:
    """A suggestion as the tuning service stores it once verified after its rollout."""
    return SuggestionRecord(
        id="sug-1",
        fingerprint="fp-1",
        kind="retry",
        caller="checkout",
        upstream="payment",
        route="default",
        target="checkout",
        state="verified",
        summary="retry 503s on checkout->payment, 2 attempts, budget 10 %",
        change={"retry": {"attempts": 2}},
        evidence={"requests": 84},
        confidence=0.8,
        window_start=T0_S,
        window_end=T0_S + 120,
        created_at=T0_S + 130,
        updated_at=T0_S + 250,
        mode="enforce",
        rolled_out_at=T0_S + 140,
        policy_version=1,
        verification={
            "outcome": "better",
            "before": {"error_rate": 0.14, "p99_ms": 30.0},
            "after": {"error_rate": 0.01, "p99_ms": 31.5},
        },
    )


async def _tuning_history(store: Store) -> None:
    """A suggestion, the policy version its acceptance stored (audited), the sidecars' replies."""
    tuning = TuningRepository(store)
    await tuning.ensure_tables()
    await tuning.save([_suggestion()])
    repository = ControlPlaneRepository(store)
    await repository.create_tables()
    clock = lambda: T0_S + 140.0  # noqa: E731
    audit = AuditLog(repository, clock=clock)
    policies = PolicyStore(repository, audit, on_change=lambda: None, clock=clock)
    operator = Principal("operator", "alice")
    doc = {
        "service": "checkout",
        "upstreams": {"payment": {}},
        "routes": [
            {
                "name": "payment",
                "destinations": [{"upstream": "payment"}],
                "retry": {"attempts": 2, "budget": {"ratio": 0.1}},
            }
        ],
    }
    await policies.put(operator, "checkout", doc, reason="accepted suggestion sug-1")
    await audit.spool.flush()
    await repository.insert_acks(
        [
            AckRow(T0_S + 141.0, "checkout", "checkout-0", 1, "n1", True, ""),
            AckRow(T0_S + 141.5, "checkout", "checkout-1", 1, "n2", False, "bad route"),
        ]
    )


def _variables(trace_id: str) -> dict[str, Any]:
    return {"service": sorted(SERVICES), "min_duration_ms": "0", "trace_id": trace_id}


Results = dict[str, tuple[Query, Rows, dict[str, str]]]

# What a Grafana user can put in a variable (a textbox, or any value through the URL's var-*)
# and what any app can name its service (the service variable lists the names in the data):
# with Grafana's own formatting, each of these ended its string literal in the SQL before
# (singlequote escapes ' as \' but leaves a backslash, which ClickHouse reads as an escape)
HOSTILE: dict[str, Any] = {
    "service": ["\\' OR 1=1 --", "x') OR 1=1 OR ('"],
    "min_duration_ms": "0') OR 1=1 OR ('",
    "trace_id": "' OR 1=1 OR '",
}


async def _hostile_rows(store: Store) -> dict[str, int | str]:
    """Each query that reads a variable, run with HOSTILE: its row count or its error."""
    out: dict[str, int | str] = {}
    for dashboard in load_dashboards():
        for query in queries(dashboard):
            if not variable_names(query.sql) & HOSTILE.keys():
                continue
            try:
                out[query.key] = len(await store.query(expand(query.sql, RANGE, HOSTILE)))
            except Exception as exc:  # (a query the values broke: reported by the test)
                out[query.key] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return out


async def _run_all(data: Path) -> tuple[Results, dict[str, int | str]]:
    traces = _shop_traces()
    store: Store = open_store(f"chdb://{data}")
    try:
        await store.migrate()
        for batch in range(3):  # a few blocks: the aggregates must merge rows across blocks
            spans = [span for trace in traces[batch::3] for span in trace.spans]
            await store.insert("otel_traces", trace_columns(spans))
        incidents = IncidentRepository(store)
        await incidents.ensure_table()
        await incidents.upsert([_incident()], dt.datetime.fromtimestamp(T0_S + 300, dt.UTC))
        await _tuning_history(store)
        variables = _variables(traces[3].trace_id)
        results = {}
        for dashboard in load_dashboards():
            for query in queries(dashboard):
                sql = expand(query.sql, RANGE, variables)
                described = await store.query(f"DESCRIBE TABLE ({sql})")
                types = {row["name"]: row["type"] for row in described}
                results[query.key] = (query, await store.query(sql), types)
        return results, await _hostile_rows(store)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Results, dict[str, int | str]]:
    """Every dashboard query run on one store filled once: with the usual variables (rows and
    column types) and with HOSTILE ones (row counts)."""
    return asyncio.run(_run_all(tmp_path_factory.mktemp("dashboards") / "ch"))


@pytest.fixture(scope="module")
def results(runs: tuple[Results, dict[str, int | str]]) -> Results:
    return runs[0]


def test_variable_values_stay_values_in_the_sql(
    runs: tuple[Results, dict[str, int | str]],
) -> None:
    hostile = runs[1]
    assert len(hostile) >= 10  # (the service, trace and duration filters are all exercised)
    # no service, trace or duration has these values: nothing matches, and nothing breaks
    leaked = {key: outcome for key, outcome in hostile.items() if outcome != 0}
    assert leaked == {}, leaked


def _all_queries() -> Iterator[Query]:
    for dashboard in load_dashboards():
        yield from queries(dashboard)


ALL = list(_all_queries())


def test_every_dashboard_has_queries_of_each_kind() -> None:
    kinds = {(q.panel_type, q.format) for q in ALL}
    expected = {("nodeGraph", 1), ("timeseries", 0), ("table", 1), ("traces", 3), ("variable", 1)}
    assert expected <= kinds


@pytest.mark.parametrize("key", [q.key for q in ALL])
def test_query_runs_and_returns_rows(results: dict[str, Any], key: str) -> None:
    query, rows, types = results[key]
    assert rows, f"{key} returned no rows on the demo data:\n{query.sql}"
    assert types, key


def _by_ref(results: Results, panel_type: str, ref: str) -> list[tuple[Rows, dict[str, str]]]:
    return [
        (rows, types)
        for query, rows, types in results.values()
        if query.panel_type == panel_type and query.ref_id == ref
    ]


def test_node_graph_nodes_have_the_fields_the_panel_reads(results: dict[str, Any]) -> None:
    [(rows, types)] = _by_ref(results, "nodeGraph", "nodes")
    assert {"id", "title", "subtitle", "mainstat", "secondarystat"} <= set(types)
    assert any(name.startswith("arc__") for name in types)
    assert any(name.startswith("detail__") for name in types)
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows)
    assert set(by_id) == SERVICES | {"fraud-api"}
    assert by_id["fraud-api"]["subtitle"] == "no server spans"
    assert by_id["payment"]["subtitle"] == "service"
    for row in rows:
        arcs = sum(value for name, value in row.items() if name.startswith("arc__"))
        assert arcs == pytest.approx(1.0), row
        assert isinstance(row["mainstat"], NUMBER) and row["mainstat"] > 0
    # payment fails on journeys 3, 10, 17, ... of 42: 6 errors
    assert by_id["payment"]["detail__errors"] == 6
    assert by_id["payment"]["arc__errors"] == pytest.approx(6 / JOURNEYS)


def test_node_graph_edges_connect_known_nodes(results: dict[str, Any]) -> None:
    [(nodes, _)] = _by_ref(results, "nodeGraph", "nodes")
    [(rows, types)] = _by_ref(results, "nodeGraph", "edges")
    assert {"id", "source", "target", "mainstat", "secondarystat", "color"} <= set(types)
    assert len({row["id"] for row in rows}) == len(rows)
    assert {(row["source"], row["target"]) for row in rows} == EDGES
    ids = {node["id"] for node in nodes}
    assert all(row["source"] in ids and row["target"] in ids for row in rows)
    inventory = [row for row in rows if row["target"] == "inventory"]
    assert {row["detail__requests"] for row in inventory} == {JOURNEYS}


def test_time_series_queries_return_time_and_numbers(results: dict[str, Any]) -> None:
    series = [(q, rows, types) for q, rows, types in results.values() if q.format == 0]
    assert len(series) >= 6
    for query, rows, types in series:
        assert types.get("time", "").startswith("DateTime"), query.key
        numeric = [n for n, t in types.items() if "Int" in t or "Float" in t]
        assert numeric, query.key
        times = [row["time"] for row in rows]
        assert times == sorted(times), query.key
        assert all(isinstance(row[numeric[0]], NUMBER) for row in rows), query.key


def test_trace_search_returns_root_spans_in_otel_mode_columns(results: dict[str, Any]) -> None:
    [(rows, types)] = [
        (rows, types)
        for query, rows, types in results.values()
        if query.panel_title == "Trace search"
    ]
    assert {"traceID", "serviceName", "operationName", "startTime", "duration"} <= set(types)
    assert len(rows) == JOURNEYS
    assert {row["serviceName"] for row in rows} == {"frontend"}
    assert all(row["duration"] > 0 for row in rows)  # ms


def test_trace_view_returns_one_whole_trace_with_trace_frame_fields(
    results: dict[str, Any],
) -> None:
    [(rows, types)] = [
        (rows, types) for query, rows, types in results.values() if query.panel_type == "traces"
    ]
    trace_fields = {
        "traceID",
        "spanID",
        "parentSpanID",
        "serviceName",
        "operationName",
        "startTime",
        "duration",
        "tags",
        "serviceTags",
        "statusCode",
        "logs",
        "references",
        "kind",
    }
    assert trace_fields <= set(types)
    assert {row["traceID"] for row in rows} == {f"{4:032x}"}
    assert [row["parentSpanID"] for row in rows].count("") == 1
    assert len(rows) == len(_shop_traces()[3].spans)
    failing = [row for row in rows if row["statusCode"] == 2]
    assert failing and all(row["serviceName"] in {"payment", "checkout"} for row in failing)
    assert any(row["logs"] for row in failing)  # the exception event


def test_variables_list_the_services(results: dict[str, Any]) -> None:
    variables = [(q, rows) for q, rows, _ in results.values() if q.panel_type == "variable"]
    assert variables
    for query, rows in variables:
        values = {next(iter(row.values())) for row in rows}
        assert SERVICES <= values, query.key


def test_incident_tables_show_the_ranked_root_causes(results: Results) -> None:
    [(_, incidents, _)] = [r for r in results.values() if r[0].panel_title == "Incidents"]
    [incident] = incidents
    assert incident["top_root_cause"] == "payment"
    assert incident["ranking"] == "payment > checkout"
    assert incident["duration_min"] == 3 and incident["anomalies"] == 1
    [(_, causes, _)] = [r for r in results.values() if r[0].panel_title == "Root-cause candidates"]
    assert [c["service"] for c in causes] == ["payment", "checkout"]
    assert causes[0]["error_origins"] == 6 and causes[0]["evidence"] == "errors start in payment"
    [(_, anomalies, _)] = [r for r in results.values() if r[0].panel_title == "Anomalies"]
    assert anomalies[0]["subject"] == "checkout->payment"
    assert anomalies[0]["observed"] == pytest.approx(0.14)


def test_tuning_tables_show_the_lifecycle_versions_acks_and_audit(results: Results) -> None:
    def panel(title: str) -> Rows:
        [(_, rows, _)] = [r for r in results.values() if r[0].panel_title == title]
        return rows

    [suggestion] = panel("Policy suggestions")
    assert suggestion["edge"] == "checkout -> payment" and suggestion["state"] == "verified"
    assert suggestion["verdict"] == "better" and suggestion["policy_version"] == 1
    assert suggestion["errors_before"] == pytest.approx(0.14)
    assert suggestion["p99_after_ms"] == pytest.approx(31.5)
    [version] = panel("Policy versions")
    assert (version["service"], version["version"], version["author"]) == ("checkout", 1, "alice")
    assert version["reason"] == "accepted suggestion sug-1"
    [acks] = panel("Sidecar ACKs")
    assert (acks["acked"], acks["nacked"], acks["nack_error"]) == (1, 1, "bad route")
    assert any(row["actor"] == "alice" for row in panel("Audit log"))


async def test_every_panel_returns_rows_on_a_real_demo_run(tmp_path: Path) -> None:
    """The demo's scenario runner (real apps, sidecars, collector) fills the store instead."""
    data, truth_path = tmp_path / "data", tmp_path / "truth.json"
    argv = [
        sys.executable, "-m", "meshlens_cli", "demo", "--scenario", "error-burst",
        "--seed", "3", "--duration", "8", "--rate", "10", "--data", str(data),
        "--ground-truth", str(truth_path), "--http-port", "0",
    ]  # fmt: skip
    run = await asyncio.to_thread(
        subprocess.run, argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    truth = json.loads(truth_path.read_text())
    window = TimeRange(truth["started_ns"] / 1e9 - 60, truth["ended_ns"] / 1e9 + 120, 60)
    store = open_store(f"chdb://{data / 'clickhouse'}")
    try:
        [widest] = await store.query(
            "SELECT TraceId FROM otel_traces GROUP BY TraceId ORDER BY uniqExact(ServiceName) DESC"
            ", TraceId LIMIT 1"
        )
        variables = {
            "service": [s.name for s in SHOP.services],
            "min_duration_ms": "0",
            "trace_id": widest["TraceId"],
        }
        empty = []
        for dashboard in load_dashboards():
            for query in queries(dashboard):
                rows = await store.query(expand(query.sql, window, variables))
                if not rows:
                    empty.append(query.key)
                if query.ref_id == "edges":
                    assert {(r["source"], r["target"]) for r in rows} == set(SHOP.edges())
                if query.panel_type == "traces":
                    assert len({r["serviceName"] for r in rows}) >= 4
    finally:
        await store.close()
    # Incidents and suggestions need minutes of baseline; every other panel (policy versions,
    # sidecar ACKs and the audit log included) has data after an 8 s run.
    needs_minutes = ("meshlens-incidents/", "meshlens-tuning/Policy suggestions/")
    assert [key for key in empty if not key.startswith(needs_minutes)] == []
