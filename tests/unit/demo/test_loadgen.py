from __future__ import annotations

import pytest

from demo.loadgen import LoadGenerator, Progress, Window, percentile
from demo.topology import SHOP


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 99) == 0.0
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_window_counts_the_last_second_and_forgets_old_samples() -> None:
    window = Window(window_s=5.0)
    for t in range(10):
        window.record(float(t), latency_ms=10.0 * (t + 1), ok=t % 3 != 0)
    requests, errors, p99 = window.snapshot(now=9.5, over_s=1.0)
    assert (requests, errors) == (1, 1)  # only t=9 finished in the last second, and failed
    assert p99 == 100.0  # window: t in [4.5, 9.5]
    assert (window.total, window.total_errors) == (10, 4)


def test_progress_line_shows_rate_errors_and_p99() -> None:
    progress = Progress(12.0, 11.0, 1, 11, 184.4, 130, 3, 2, 0)
    line = progress.line("fault: latency on payment")
    assert line.startswith("[   12s]  11.0 journeys/s  errors   9.1% (  1)  p99    184 ms")
    assert line.endswith("total 130 (3 failed)  | fault: latency on payment")


def _gen(seed: int) -> LoadGenerator:
    return LoadGenerator(SHOP, ["http://a", "http://b"], 10.0, lambda _: None, seed=seed)


def test_journeys_follow_the_weights_deterministically() -> None:
    picks = [_gen(3).pick() for _ in range(1)]
    gen_a, gen_b = _gen(3), _gen(3)
    seq_a = [gen_a.pick() for _ in range(500)]
    assert seq_a == [gen_b.pick() for _ in range(500)] and picks[0] == seq_a[0]
    browse = sum(j.name == "browse" for j, _ in seq_a)
    assert 200 < browse < 300  # weight 5 of 10
    assert {url for _, url in seq_a} == {"http://a", "http://b"}


@pytest.mark.parametrize("rate", [0.0, -1.0, 1000.0])
def test_the_rate_is_bounded(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        LoadGenerator(SHOP, ["http://a"], rate, lambda _: None)
