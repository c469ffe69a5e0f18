from __future__ import annotations

from pathlib import Path

import pytest

from bench.sidecar_proxy import (
    GoalLine,
    RateResult,
    Result,
    added_p50_detail,
    fixed_rate_command,
    fixed_rate_goal,
    median_rate_rows,
    median_rows,
    request_times_ms,
    saturated_goals,
)


def _round(nginx_rps: float, one_rps: float, one_p50: float, one_rss: float) -> list[Result]:
    return [
        Result("direct", 100_000.0, 0.10, 0.50, 500_000, 0),
        Result("nginx proxy_pass", nginx_rps, 0.40, 1.00, 300_000, 0, 14.0, 9.0),
        Result("sidecar (outbound)", one_rps, one_p50, 1.70, 170_000, 1, 28.0, one_rss),
        Result("sidecar (outbound, pure Python)", 15_000.0, 2.00, 3.00, 75_000, 0, 62.0, 32.0),
    ]


ROUNDS = [
    _round(60_000.0, 29_400.0, 0.94, 35.0),  # 0.49x; added 0.84 / 0.30 = 2.8x
    _round(60_000.0, 33_000.0, 0.91, 36.0),  # 0.55x; added 0.81 / 0.30 = 2.7x
    _round(50_000.0, 27_000.0, 0.58, 41.0),  # 0.54x; added 0.48 / 0.30 = 1.6x
]


def test_rows_are_per_scenario_medians_with_ratios_taken_per_round() -> None:
    rows = median_rows(ROUNDS)
    assert [r.name for r in rows] == [r.name for r in ROUNDS[0]]
    one = rows[2]
    assert one.rps == 29_400.0
    assert one.x_nginx == pytest.approx(0.54)  # median of 0.49 / 0.55 / 0.54, not 29.4k / 60k
    assert one.p50_ms == 0.91
    assert one.added_p50_ms == pytest.approx(0.81)
    assert (one.rss_mb, one.rss_max_mb) == (36.0, 41.0)
    assert one.errors == 3  # summed
    assert rows[0].cpu_us is None and rows[0].rss_max_mb is None
    assert rows[1].x_nginx == 1.0


def test_goal_lines_show_every_round_and_judge_the_median() -> None:
    hop, added, cpu, rss = saturated_goals(ROUNDS)
    assert hop.values == pytest.approx((0.49, 0.55, 0.54))
    assert hop.met and hop.met_rounds == 2
    assert hop.text() == (
        "  one hop >= 0.50x nginx req/s            0.49x / 0.55x / 0.54x -> median 0.54x  met"
        " (2/3 rounds met it)"
    )
    assert added.values == pytest.approx((2.8, 2.7, 1.6))
    assert not added.met and added.met_rounds == 1
    assert added.text().endswith("-> median 2.7x  NOT met (1/3 rounds met it)")
    assert cpu.met and cpu.met_rounds == 3
    assert rss.median == 36.0 and rss.met and rss.met_rounds == 2


def test_one_round_keeps_the_single_figure_line() -> None:
    hop = saturated_goals(ROUNDS[:1])[0]
    assert hop.text() == "  one hop >= 0.50x nginx req/s             0.49x  NOT met"
    assert median_rows(ROUNDS[:1])[2].rps == 29_400.0


def test_goal_line_even_number_of_rounds_takes_the_middle_mean() -> None:
    goal = GoalLine("g", (1.0, 3.0), 2.0, False, "{:.1f}")
    assert goal.median == 2.0 and goal.met and goal.met_rounds == 1


def _rate_round(nginx_p50: float, one_p50: float) -> list[RateResult]:
    return [
        RateResult("direct", 1000.0, 0.230, 0.280, 0.370, 0),
        RateResult("nginx proxy_pass", 1000.0, nginx_p50, 0.540, 0.720, 0, 0.016),
        RateResult("sidecar (outbound)", 1000.0, one_p50, 0.850, 1.230, 2, 0.035),
    ]


def test_fixed_rate_rows_and_goal_per_round() -> None:
    rounds = [_rate_round(0.330, 0.400), _rate_round(0.330, 0.390), _rate_round(0.330, 0.440)]
    goal = fixed_rate_goal(rounds, 1000)
    assert goal is not None
    assert goal.values == pytest.approx((1.7, 1.6, 2.1))
    assert goal.met and goal.met_rounds == 2
    assert goal.text().startswith("  added p50 <= 2x nginx's at 1000 req/s   1.7x / 1.6x / 2.1x")
    one = median_rate_rows(rounds)[2]
    assert one.p50_ms == 0.400
    assert one.added_p50_ms == pytest.approx(0.170)
    assert one.added_p99_ms == pytest.approx(0.860)
    assert one.failed == 6


def test_rounds_must_run_the_same_scenarios_with_an_nginx_baseline() -> None:
    with pytest.raises(ValueError, match="no rounds"):
        median_rows([])
    with pytest.raises(ValueError, match="round 2 ran other scenarios"):
        median_rows([ROUNDS[0], ROUNDS[1][:3]])
    with pytest.raises(ValueError, match="no nginx row"):
        median_rows([[r for r in ROUNDS[0] if not r.name.startswith("nginx")]])
    assert saturated_goals([ROUNDS[0][:2]]) == []


def test_added_p50_detail_gives_both_terms_of_each_rounds_ratio() -> None:
    rounds = [_rate_round(0.330, 0.400), _rate_round(0.237, 0.270)]
    assert added_p50_detail(rounds) == (
        "    added p50 ms per round: sidecar 0.170 / 0.040, nginx 0.100 / 0.007"
    )


def test_a_round_whose_nginx_adds_nothing_measurable_is_undecided_not_met() -> None:
    # nginx's p50 at or below direct's: the round cannot resolve the baseline; a ratio against
    # it (here -0.02 / -0.06 ms, or anything over 0) must not count as met
    rounds = [_rate_round(0.330, 0.400), _rate_round(0.170, 0.210), _rate_round(0.230, 0.400)]
    goal = fixed_rate_goal(rounds, 1000)
    assert goal is not None
    assert goal.values[0] == pytest.approx(1.7)
    assert goal.values[1] == goal.values[2] == float("inf")
    assert goal.met_rounds == 1 and not goal.met
    assert "1.7x / n/a / n/a -> median n/a  NOT met (1/3 rounds met it)" in goal.text()


def test_fixed_rate_arrivals_are_evenly_spaced_over_16_connections(tmp_path: Path) -> None:
    cmd = fixed_rate_command("http://127.0.0.1:1/", 1, 1000, "app", tmp_path / "log")
    # 16 connections started 1 ms apart, each sending 62.5/s: one request per ms in all
    # (the Host as :authority: h2load sends its own Host beside a `-H "Host: ..."` one)
    assert cmd[:4] == ["h2load", "-H", ":authority: app", "--h1"]
    assert {"-c16", "--rps=62.5", "-r1", "--rate-period=1ms", "-n1000"} <= set(cmd)
    assert "-D" not in " ".join(cmd)  # (h2load refuses -D with -r: the count bounds the run)
    assert fixed_rate_command("http://x/", 2, 500, None, tmp_path / "log")[1] == "--h1"


def test_request_times_pool_every_slice_and_keep_only_200s(tmp_path: Path) -> None:
    one, two = tmp_path / "a.log", tmp_path / "b.log"
    one.write_text("1700000000000000\t200\t150\n1700000000001000\t503\t90\n")
    two.write_text("1700000000002000\t200\t40\nnot a log line\n")
    assert request_times_ms([one, two]) == [0.04, 0.15]
