"""The sidecar's metric registry: labelled counters, gauges, histograms as Prometheus text.

Increments are a dict lookup on a tuple of label values; series per metric are capped (new label
sets past the cap are not recorded, and counted in meshlens_sidecar_metric_series_overflow_total).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "Gauge",
    "Histogram",
    "PromMetric",
    "Registry",
    "bucket_index",
    "escape_label",
    "format_value",
    "label_string",
    "render_histogram",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = tuple[str, ...]


def bucket_index(bounds: tuple[float, ...], value: float) -> int:
    """The bucket of `value` for sorted upper `bounds` (inclusive): bisect_left's index.

    A linear scan from the first bucket: request durations and sizes fall in the first few
    buckets, and compiled (sidecar/_native.py) this is a loop over unboxed floats, cheaper per
    request than a call into the bisect module.
    """
    index = 0
    for bound in bounds:
        if not bound < value:  # (not `value <= bound`: a NaN goes to bucket 0, as in bisect)
            return index
        index += 1
    return index


def escape_label(value: str) -> str:
    """Escape a label value for the text format (backslash, double quote, newline)."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def label_string(names: Sequence[str], values: Sequence[str]) -> str:
    """`name="value",...` (without braces)."""
    return ",".join(f'{n}="{escape_label(v)}"' for n, v in zip(names, values, strict=True))


def format_value(value: float) -> str:
    """A sample value in Go float syntax: integers without a fraction, infinities as +Inf/-Inf."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _braced(labels: str) -> str:
    return "{" + labels + "}" if labels else ""


def render_histogram(
    lines: list[str],
    name: str,
    labels: str,
    bounds: Sequence[str],
    counts: Sequence[int],
    total: float,
) -> None:
    """Append `name_bucket` (cumulative, ending at +Inf), `name_sum` and `name_count` lines."""
    sep = "," if labels else ""
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        lines.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
    running += counts[-1]
    lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {running}')
    lines.append(f"{name}_sum{_braced(labels)} {format_value(total)}")
    lines.append(f"{name}_count{_braced(labels)} {running}")


class PromMetric(Protocol):
    """Anything the registry renders: appends its `# HELP`, `# TYPE` and sample lines."""

    def render_into(self, lines: list[str]) -> None: ...


OverflowHook = Callable[[str], None]


class _Labelled:
    __slots__ = ("_max_series", "_on_overflow", "help", "labelnames", "name")

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str],
        max_series: int,
        on_overflow: OverflowHook,
    ) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._max_series = max_series
        self._on_overflow = on_overflow

    def _header(self, lines: list[str], kind: str) -> None:
        lines.append(f"# HELP {self.name} {self.help}")
        lines.append(f"# TYPE {self.name} {kind}")

    def _check(self, labels: Labels, size: int) -> bool:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels}")
        if size >= self._max_series:
            self._on_overflow(self.name)
            return False
        return True


class Counter(_Labelled):
    """A monotonically increasing count per label set."""

    __slots__ = ("_values",)

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str],
        max_series: int,
        on_overflow: OverflowHook,
    ) -> None:
        super().__init__(name, help_text, labelnames, max_series, on_overflow)
        self._values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        values = self._values
        if labels in values:
            values[labels] += amount
        elif self._check(labels, len(values)):
            values[labels] = amount

    def value(self, labels: Labels = ()) -> float:
        return self._values.get(labels, 0.0)

    def items(self) -> list[tuple[Labels, float]]:
        """Every series and its value."""
        return list(self._values.items())

    def render_into(self, lines: list[str]) -> None:
        self._header(lines, "counter")
        for labels, value in self._values.items():
            text = _braced(label_string(self.labelnames, labels))
            lines.append(f"{self.name}{text} {format_value(value)}")


class Gauge(Counter):
    """A value per label set that may go up and down."""

    __slots__ = ()

    def set(self, labels: Labels, value: float) -> None:
        if labels in self._values or self._check(labels, len(self._values)):
            self._values[labels] = value

    def clear(self) -> None:
        self._values.clear()

    def render_into(self, lines: list[str]) -> None:
        self._header(lines, "gauge")
        for labels, value in self._values.items():
            text = _braced(label_string(self.labelnames, labels))
            lines.append(f"{self.name}{text} {format_value(value)}")


class Histogram(_Labelled):
    """Bucketed observations per label set (upper bounds inclusive, as Prometheus `le`)."""

    __slots__ = ("_bound_text", "_bounds", "_series")

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str],
        max_series: int,
        on_overflow: OverflowHook,
        bounds: Sequence[float],
    ) -> None:
        super().__init__(name, help_text, labelnames, max_series, on_overflow)
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: bucket bounds must be strictly increasing")
        self._bounds: tuple[float, ...] = tuple(float(b) for b in bounds)
        self._bound_text = tuple(format_value(b) for b in bounds)
        # per label set: [bucket counts..., +Inf count], [sum]
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        state = self._series.get(labels)
        if state is None:
            if not self._check(labels, len(self._series)):
                return
            state = ([0] * (len(self._bounds) + 1), [0.0])
            self._series[labels] = state
        state[0][bucket_index(self._bounds, value)] += 1
        state[1][0] += value

    def render_into(self, lines: list[str]) -> None:
        self._header(lines, "histogram")
        for labels, (counts, total) in self._series.items():
            text = label_string(self.labelnames, labels)
            render_histogram(lines, self.name, text, self._bound_text, counts, total[0])


class Registry:
    """All metrics of one sidecar, rendered in registration order."""

    __slots__ = ("_max_series", "_metrics", "overflow")

    def __init__(self, max_series: int = 2000) -> None:
        self._max_series = max_series
        self._metrics: list[PromMetric] = []
        self.overflow = Counter(
            "meshlens_sidecar_metric_series_overflow_total",
            "Observations not recorded because their metric reached its series cap.",
            ("metric",),
            1000,
            lambda _name: None,
        )
        self._metrics.append(self.overflow)

    def _count_overflow(self, name: str) -> None:
        self.overflow.inc((name,))

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        metric = Counter(name, help_text, labelnames, self._max_series, self._count_overflow)
        self._metrics.append(metric)
        return metric

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        metric = Gauge(name, help_text, labelnames, self._max_series, self._count_overflow)
        self._metrics.append(metric)
        return metric

    def histogram(
        self, name: str, help_text: str, labelnames: Sequence[str], bounds: Sequence[float]
    ) -> Histogram:
        metric = Histogram(
            name, help_text, labelnames, self._max_series, self._count_overflow, bounds
        )
        self._metrics.append(metric)
        return metric

    def register(self, metric: PromMetric) -> None:
        """Add a metric that renders itself (e.g. the Istio request metrics)."""
        self._metrics.append(metric)

    @property
    def max_series(self) -> int:
        return self._max_series

    def count_overflow(self, name: str) -> None:
        self._count_overflow(name)

    def render(self) -> str:
        """The whole registry in Prometheus text format 0.0.4 (ends with a newline)."""
        lines: list[str] = []
        for metric in self._metrics:
            metric.render_into(lines)
        lines.append("")
        return "\n".join(lines)
