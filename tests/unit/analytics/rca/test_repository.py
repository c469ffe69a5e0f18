"""Reading spans for ranking from a real embedded store, with error-level logs marking spans."""

from __future__ import annotations

from datetime import timedelta

from analytics.rca.repository import load_spans, logged_error_spans
from collector.store import Store
from tests.conftest import trace_columns
from tests.unit.analytics.scenario import T0, mesh_spans, minute


async def test_a_span_an_error_log_names_is_loaded_as_failed(store: Store) -> None:
    await store.insert("otel_traces", trace_columns(mesh_spans(2, slow_from=99)))
    spans = await load_spans(store, minute(0), minute(2))
    db = [s for s in spans if s.service == "db"]
    assert db and not any(s.error for s in spans)
    target, other = db[0], db[1]
    at = T0 + timedelta(seconds=1)
    await store.insert(
        "otel_logs",
        {
            "Timestamp": [at, at, at],
            "TraceId": [target.trace_id, other.trace_id, ""],
            "SpanId": [target.span_id, other.span_id, ""],
            "SeverityText": ["ERROR", "INFO", "ERROR"],
            "SeverityNumber": [17, 9, 17],
            "ServiceName": ["db", "db", "db"],
            "Body": ["query failed", "query ok", "no span"],
        },
    )

    assert await logged_error_spans(store, minute(0), minute(2)) == {
        (target.trace_id, target.span_id)
    }
    marked = await load_spans(store, minute(0), minute(2))
    assert [(s.trace_id, s.span_id) for s in marked if s.error] == [
        (target.trace_id, target.span_id)
    ]
    plain = await load_spans(store, minute(0), minute(2), logged_errors=False)
    assert not any(s.error for s in plain)
