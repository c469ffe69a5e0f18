"""Collector self-metrics: counters and gauges, as Prometheus text and a periodic log line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["CollectorMetrics", "render_prometheus"]

logger = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> (type, help); every metric we expose is declared here.
_DECLARED: dict[str, tuple[str, str]] = {
    "meshlens_collector_received_items_total": (
        "counter",
        "Spans or data points accepted from senders (durably spooled), by signal.",
    ),
    "meshlens_collector_rejected_items_total": (
        "counter",
        "Spans or data points rejected as invalid (partial success), by signal.",
    ),
    "meshlens_collector_requests_total": (
        "counter",
        "OTLP export requests answered, by transport and outcome.",
    ),
    "meshlens_collector_written_rows_total": ("counter", "Rows the store accepted, by table."),
    "meshlens_collector_dropped_rows_total": ("counter", "Rows given up on, by reason."),
    "meshlens_collector_store_errors_total": ("counter", "Failed store inserts, by kind."),
    "meshlens_collector_batches_total": ("counter", "Batches written to the store."),
    "meshlens_collector_spilled_records_total": (
        "counter",
        "Spooled requests not kept in memory (re-read from disk when exported).",
    ),
    "meshlens_collector_spool_pending_records": (
        "gauge",
        "Spooled requests not yet confirmed written to the store.",
    ),
    "meshlens_collector_spool_size_bytes": ("gauge", "Bytes of spool segments on disk."),
    "meshlens_collector_queue_rows": ("gauge", "Decoded rows held in memory awaiting a batch."),
}


@dataclass
class CollectorMetrics:
    """In-process metric values; labels are small closed sets (signal, table, reason, outcome)."""

    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    gauges: dict[str, Callable[[], float]] = field(default_factory=dict)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        if name not in _DECLARED:
            raise KeyError(f"undeclared metric {name}")
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0) + amount

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Register a gauge read at render time."""
        if name not in _DECLARED:
            raise KeyError(f"undeclared metric {name}")
        self.gauges[name] = read

    def value(self, name: str, **labels: str) -> float:
        """The current value of a counter (0 if never bumped) or gauge."""
        if name in self.gauges:
            return float(self.gauges[name]())
        return self.counters.get((name, tuple(sorted(labels.items()))), 0)

    def total(self, name: str) -> float:
        """A counter summed over all its label sets."""
        return sum(v for (n, _), v in self.counters.items() if n == name)

    def snapshot(self) -> dict[str, float]:
        """Flat view for the periodic log line."""
        out: dict[str, float] = {}
        for (name, labels), value in sorted(self.counters.items()):
            suffix = ",".join(f"{k}={v}" for k, v in labels)
            out[f"{name}{{{suffix}}}" if suffix else name] = value
        for name, read in sorted(self.gauges.items()):
            out[name] = float(read())
        return out

    def log(self) -> None:
        logger.info("collector metrics", extra={"metrics": self.snapshot()})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_prometheus(metrics: CollectorMetrics) -> str:
    """Prometheus text exposition format 0.0.4 (ends with a newline)."""
    lines: list[str] = []
    for name, (kind, help_text) in _DECLARED.items():
        if kind == "gauge":
            if name not in metrics.gauges:
                continue
            samples: list[tuple[tuple[tuple[str, str], ...], float]] = [
                ((), float(metrics.gauges[name]()))
            ]
        else:
            samples = sorted((lb, v) for (n, lb), v in metrics.counters.items() if n == name)
            if not samples:
                samples = [((), 0.0)]
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(
                f"{name}{{{label_text}}} {_number(value)}"
                if label_text
                else f"{name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"
