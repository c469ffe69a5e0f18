"""ExportMetricsServiceRequest -> `otel_metrics_*` columns, one table per metric type."""

from __future__ import annotations

from typing import Any

from collector.otlp.anyvalue import attrs_to_map
from collector.otlp.columns import Columns, DecodedBatch, Signal

__all__ = ["METRIC_TABLES", "decode_metrics"]

# Metric data oneof name -> table (INTERFACES §1.5; exponential histogram name per §9.3).
METRIC_TABLES = {
    "gauge": "otel_metrics_gauge",
    "sum": "otel_metrics_sum",
    "histogram": "otel_metrics_histogram",
    "exponential_histogram": "otel_metrics_exponential_histogram",
    "summary": "otel_metrics_summary",
}

_NS = 1_000_000_000
# TimeUnix, StartTimeUnix and the exemplars' TimeUnix are DateTime: UInt32 seconds
MAX_POINT_NANO = 2**32 * _NS
_COMMON = (
    "ResourceAttributes",
    "ResourceSchemaUrl",
    "ScopeName",
    "ScopeVersion",
    "ScopeAttributes",
    "ScopeDroppedAttrCount",
    "ScopeSchemaUrl",
    "ServiceName",
    "MetricName",
    "MetricDescription",
    "MetricUnit",
    "Attributes",
    "StartTimeUnix",
    "TimeUnix",
)
_EXEMPLARS = (
    "Exemplars.FilteredAttributes",
    "Exemplars.TimeUnix",
    "Exemplars.Value",
    "Exemplars.SpanId",
    "Exemplars.TraceId",
)
_SPECIFIC = {
    "gauge": ("Value", "Flags", *_EXEMPLARS),
    "sum": ("Value", "Flags", *_EXEMPLARS, "AggregationTemporality", "IsMonotonic"),
    "histogram": (
        "Count",
        "Sum",
        "BucketCounts",
        "ExplicitBounds",
        *_EXEMPLARS,
        "Flags",
        "Min",
        "Max",
        "AggregationTemporality",
    ),
    "exponential_histogram": (
        "Count",
        "Sum",
        "Scale",
        "ZeroCount",
        "PositiveOffset",
        "PositiveBucketCounts",
        "NegativeOffset",
        "NegativeBucketCounts",
        *_EXEMPLARS,
        "Flags",
        "Min",
        "Max",
        "AggregationTemporality",
    ),
    "summary": ("Count", "Sum", "ValueAtQuantiles.Quantile", "ValueAtQuantiles.Value", "Flags"),
}


def decode_metrics(request: Any) -> DecodedBatch:
    """Build metric table columns from a parsed request; points without a value are rejected."""
    tables: dict[str, Columns] = {}
    accepted = rejected = 0
    first_error = ""
    for resource_metrics in request.resource_metrics:
        resource = attrs_to_map(resource_metrics.resource.attributes)
        service = resource.get("service.name", "")
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            scope_prefix = (
                resource,
                resource_metrics.schema_url,
                scope.name,
                scope.version,
                attrs_to_map(scope.attributes),
                scope.dropped_attributes_count,
                scope_metrics.schema_url,
                service,
            )
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                cols = tables.get(METRIC_TABLES[kind])
                if cols is None:
                    cols = {name: [] for name in (*_COMMON, *_SPECIFIC[kind])}
                    tables[METRIC_TABLES[kind]] = cols
                prefix = (*scope_prefix, metric.name, metric.description, metric.unit)
                ok, bad, error = _decode_points(cols, kind, getattr(metric, kind), prefix)
                accepted += ok
                rejected += bad
                if error and not first_error:
                    first_error = f"metric {metric.name!r}: {error}"
    if rejected and first_error:
        first_error = f"{rejected} data point(s) rejected; first: {first_error}"
    return DecodedBatch(Signal.METRICS, tables, accepted, rejected, first_error)


def _decode_points(
    cols: Columns, kind: str, data: Any, prefix: tuple[Any, ...]
) -> tuple[int, int, str]:
    accepted = rejected = 0
    error = ""
    temporality = getattr(data, "aggregation_temporality", 0)
    for point in data.data_points:
        problem = _point_problem(kind, point)
        if problem:
            rejected += 1
            error = error or problem
            continue
        accepted += 1
        for name, value in zip(_COMMON[:11], prefix, strict=True):
            cols[name].append(value)
        cols["Attributes"].append(attrs_to_map(point.attributes))
        # StartTimeUnix/TimeUnix are second-precision DateTime since exporter v0.160 (§9.4).
        cols["StartTimeUnix"].append(point.start_time_unix_nano // _NS)
        cols["TimeUnix"].append(point.time_unix_nano // _NS)
        cols["Flags"].append(point.flags)
        if kind in ("gauge", "sum"):
            cols["Value"].append(_number(point))
            if kind == "sum":
                cols["AggregationTemporality"].append(temporality)
                cols["IsMonotonic"].append(bool(data.is_monotonic))
        elif kind == "summary":
            cols["Count"].append(point.count)
            cols["Sum"].append(point.sum)
            cols["ValueAtQuantiles.Quantile"].append([q.quantile for q in point.quantile_values])
            cols["ValueAtQuantiles.Value"].append([q.value for q in point.quantile_values])
            continue
        else:
            _append_histogram(cols, kind, point, temporality)
        _append_exemplars(cols, point.exemplars)
    return accepted, rejected, error


def _point_problem(kind: str, point: Any) -> str:
    if (
        point.time_unix_nano >= MAX_POINT_NANO
        or point.start_time_unix_nano >= MAX_POINT_NANO
        or any(e.time_unix_nano >= MAX_POINT_NANO for e in getattr(point, "exemplars", ()))
    ):
        return "a time out of the store's range (TimeUnix is DateTime: before 2106-02-07)"
    if kind in ("gauge", "sum") and point.WhichOneof("value") is None:
        return "number data point has neither as_double nor as_int"
    if (
        kind == "histogram"
        and point.explicit_bounds
        and (len(point.bucket_counts) != len(point.explicit_bounds) + 1)
    ):
        return "histogram bucket_counts must have len(explicit_bounds) + 1 entries"
    return ""


def _number(point: Any) -> float:
    if point.WhichOneof("value") == "as_int":
        return float(point.as_int)
    return float(point.as_double)


def _append_histogram(cols: Columns, kind: str, point: Any, temporality: int) -> None:
    cols["Count"].append(point.count)
    cols["Sum"].append(point.sum)
    if kind == "histogram":
        cols["BucketCounts"].append(list(point.bucket_counts))
        cols["ExplicitBounds"].append(list(point.explicit_bounds))
    else:
        cols["Scale"].append(point.scale)
        cols["ZeroCount"].append(point.zero_count)
        cols["PositiveOffset"].append(point.positive.offset)
        cols["PositiveBucketCounts"].append(list(point.positive.bucket_counts))
        cols["NegativeOffset"].append(point.negative.offset)
        cols["NegativeBucketCounts"].append(list(point.negative.bucket_counts))
    cols["Min"].append(point.min)
    cols["Max"].append(point.max)
    cols["AggregationTemporality"].append(temporality)


def _append_exemplars(cols: Columns, exemplars: Any) -> None:
    cols["Exemplars.FilteredAttributes"].append(
        [attrs_to_map(e.filtered_attributes) for e in exemplars]
    )
    cols["Exemplars.TimeUnix"].append([e.time_unix_nano // _NS for e in exemplars])
    cols["Exemplars.Value"].append([_number(e) for e in exemplars])
    cols["Exemplars.SpanId"].append([e.span_id.hex() for e in exemplars])
    cols["Exemplars.TraceId"].append([e.trace_id.hex() for e in exemplars])
