"""Shared helpers for collector unit tests: an in-memory Store sink and request builders."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from collector.store.base import Rows, StoreRejected, StoreUnavailable


class MemoryStore:
    """A Store that keeps inserted columns in memory, honours dedup tokens and can be failed."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.tokens: set[str] = set()
        self.inserts: list[tuple[str, str | None, int]] = []
        self.unavailable = False
        self.reject_tables: set[str] = set()
        # a row this returns True for fails its whole insert, as a value out of a column's
        # range does in the real store
        self.reject_row: Callable[[Mapping[str, Any]], bool] | None = None
        self.failed_calls = 0

    @property
    def url(self) -> str:
        return "memory://"

    async def migrate(self) -> int:
        return 1

    async def insert(
        self,
        table: str,
        columns: Mapping[str, Sequence[Any]],
        *,
        dedup_token: str | None = None,
    ) -> int:
        if self.unavailable:
            self.failed_calls += 1
            raise StoreUnavailable("store is down (test)")
        if table in self.reject_tables:
            raise StoreRejected(f"{table} rejected (test)")
        if self.reject_row is not None:
            names = list(columns)
            for index in range(len(columns[names[0]])):
                if self.reject_row({name: columns[name][index] for name in names}):
                    raise StoreRejected(f"{table}: bad value in row {index} (test)")
        lengths = {len(values) for values in columns.values()}
        assert len(lengths) == 1, f"ragged columns {lengths}"
        rows = lengths.pop()
        self.inserts.append((table, dedup_token, rows))
        if dedup_token is not None and dedup_token in self.tokens:
            return 0
        if dedup_token is not None:
            self.tokens.add(dedup_token)
        names = list(columns)
        target = self.tables.setdefault(table, [])
        for index in range(rows):
            target.append({name: columns[name][index] for name in names})
        return rows

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Rows:
        raise NotImplementedError("MemoryStore does not run SQL")

    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        raise NotImplementedError("MemoryStore does not run SQL")

    async def ping(self) -> bool:
        return not self.unavailable

    async def close(self) -> None:
        return None


def kv(key: str, value: Any) -> common_pb2.KeyValue:
    """A KeyValue with the AnyValue variant chosen from the Python type."""
    any_value = common_pb2.AnyValue()
    if isinstance(value, bool):
        any_value.bool_value = value
    elif isinstance(value, int):
        any_value.int_value = value
    elif isinstance(value, float):
        any_value.double_value = value
    elif isinstance(value, bytes):
        any_value.bytes_value = value
    else:
        any_value.string_value = str(value)
    return common_pb2.KeyValue(key=key, value=any_value)


def trace_request(
    n: int, *, service: str = "checkout", start_ns: int = 1_700_000_000_000_000_000
) -> trace_service_pb2.ExportTraceServiceRequest:
    """`n` valid server spans with random ids, one resource and scope."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend([kv("service.name", service), kv("host.name", "h1")])
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "test"
    scope_spans.scope.version = "1.0"
    for index in range(n):
        span = scope_spans.spans.add()
        span.trace_id = os.urandom(16)
        span.span_id = os.urandom(8)
        span.name = f"GET /item/{index % 3}"
        span.kind = 2
        span.start_time_unix_nano = start_ns + index
        span.end_time_unix_nano = start_ns + index + 1_000_000
        span.attributes.extend([kv("http.response.status_code", 200), kv("i", index)])
    return request


def gauge_request(values: Sequence[float]) -> metrics_service_pb2.ExportMetricsServiceRequest:
    """One gauge metric `queue.depth` with a data point per value."""
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.append(kv("service.name", "worker"))
    metric = resource_metrics.scope_metrics.add().metrics.add()
    metric.name = "queue.depth"
    metric.unit = "1"
    for index, value in enumerate(values):
        point = metric.gauge.data_points.add()
        point.time_unix_nano = 1_700_000_000_000_000_000 + index * 1_000_000_000
        point.as_double = value
    return request
