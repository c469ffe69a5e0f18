from __future__ import annotations

import pytest

from collector.metrics import CollectorMetrics, render_prometheus


def test_prometheus_text_has_help_type_labels_and_gauges() -> None:
    metrics = CollectorMetrics()
    metrics.inc("meshlens_collector_received_items_total", 5, signal="traces")
    metrics.inc("meshlens_collector_received_items_total", 2, signal="traces")
    metrics.inc("meshlens_collector_dropped_rows_total", 3, reason='a"b')
    metrics.gauge("meshlens_collector_queue_rows", lambda: 17)

    text = render_prometheus(metrics)

    assert text.endswith("\n")
    assert "# TYPE meshlens_collector_received_items_total counter" in text
    assert 'meshlens_collector_received_items_total{signal="traces"} 7' in text
    assert 'meshlens_collector_dropped_rows_total{reason="a\\"b"} 3' in text
    assert "# TYPE meshlens_collector_queue_rows gauge\nmeshlens_collector_queue_rows 17" in text
    assert "meshlens_collector_store_errors_total 0" in text
    assert metrics.total("meshlens_collector_received_items_total") == 7


def test_undeclared_metrics_are_refused() -> None:
    with pytest.raises(KeyError):
        CollectorMetrics().inc("made_up_total")
