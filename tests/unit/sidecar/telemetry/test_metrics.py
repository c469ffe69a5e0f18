"""Prometheus text rendering of the registry, checked with a small text-format parser."""

from __future__ import annotations

import bisect
import random

import pytest

from sidecar.telemetry.metrics import Registry, bucket_index, escape_label, format_value
from tests.unit.sidecar.telemetry.promtext import parse_prometheus


def test_counter_gauge_and_histogram_render_and_parse() -> None:
    registry = Registry()
    requests = registry.counter("demo_requests_total", "Requests.", ("code",))
    requests.inc(("200",))
    requests.inc(("200",), 2)
    requests.inc(('we"ird\\\n',))
    gauge = registry.gauge("demo_info", "Info.", ("version",))
    gauge.set(("v1",), 1)
    hist = registry.histogram("demo_seconds", "Latency.", ("route",), (0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        hist.observe(("r1",), value)

    types, samples = parse_prometheus(registry.render())
    assert types["demo_requests_total"] == "counter"
    assert types["demo_seconds"] == "histogram"
    values = {(n, tuple(sorted(lb.items()))): v for n, lb, v in samples}
    assert values[("demo_requests_total", (("code", "200"),))] == 3
    assert values[("demo_requests_total", (("code", 'we"ird\\\n'),))] == 1
    assert values[("demo_info", (("version", "v1"),))] == 1
    buckets = [(lb["le"], v) for n, lb, v in samples if n == "demo_seconds_bucket"]
    # 0.1 lands in le="0.1" (upper bounds are inclusive); cumulative counts end at +Inf == count
    assert buckets == [("0.1", 2), ("1", 3), ("+Inf", 4)]
    assert values[("demo_seconds_count", (("route", "r1"),))] == 4
    assert values[("demo_seconds_sum", (("route", "r1"),))] == pytest.approx(3.65)


def test_series_cap_counts_overflow_instead_of_growing() -> None:
    registry = Registry(max_series=2)
    counter = registry.counter("demo_total", "Demo.", ("path",))
    for i in range(5):
        counter.inc((f"/p/{i}",))
    counter.inc(("/p/0",))  # existing series still count
    _, samples = parse_prometheus(registry.render())
    demo = {lb["path"]: v for n, lb, v in samples if n == "demo_total"}
    assert demo == {"/p/0": 2, "/p/1": 1}
    overflow = [v for n, lb, v in samples if n == "meshlens_sidecar_metric_series_overflow_total"]
    assert overflow == [3]


def test_wrong_label_count_is_a_clear_error() -> None:
    counter = Registry().counter("demo_total", "Demo.", ("a", "b"))
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(("only-one",))


def test_histogram_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        Registry().histogram("h", "H.", (), (1.0, 1.0))


def test_value_and_label_formatting() -> None:
    assert format_value(3.0) == "3" and format_value(0.5) == "0.5"
    assert format_value(float("inf")) == "+Inf" and format_value(float("nan")) == "NaN"
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_bucket_index_is_bisect_left() -> None:
    bounds = (0.5, 1.0, 5.0, 10.0, 2500.0)
    rng = random.Random(7)
    values = [0, 0.5, 0.50001, 1, 5, 10, 2500, 2501, -1.0, float("inf"), float("nan")]
    values += [rng.uniform(-1, 3000) for _ in range(500)]
    for value in values:
        assert bucket_index(bounds, value) == bisect.bisect_left(bounds, value), value
    assert bucket_index((), 3.0) == 0
