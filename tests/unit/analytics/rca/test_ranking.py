"""Root-cause ranking on constructed call trees where the answer is known."""

from __future__ import annotations

import itertools

import pytest

from analytics.rca import SpanRow, rank_root_causes, with_logged_errors

MS = 1_000_000
_ids = itertools.count(1)


def _call_tree(
    trace: str, node: tuple[str, int, bool, list[object]], start: int, parent: str = ""
) -> list[SpanRow]:
    """node = (service, self_ms, error, children); children run one after another."""
    service, self_ms, error, children = node
    span_id = f"{next(_ids):016x}"
    rows: list[SpanRow] = []
    cursor = start + self_ms * MS // 2
    for child in children:
        sub = _call_tree(trace, child, cursor, span_id)  # type: ignore[arg-type]
        rows += sub
        cursor += sub[0].duration_ns
    duration = cursor - start + self_ms * MS - self_ms * MS // 2
    return [
        SpanRow(trace, span_id, parent, service, f"{service}.op", start, duration, error),
        *rows,
    ]


def _traces(shape: object, count: int, jitter: bool = True) -> list[SpanRow]:
    rows: list[SpanRow] = []
    for i in range(count):
        tree = shape(i % 3 if jitter else 0)  # type: ignore[operator]
        rows += _call_tree(f"{next(_ids):032x}", tree, i * 1000 * MS)
    return rows


def test_a_slow_leaf_is_ranked_above_the_callers_that_inherit_its_latency() -> None:
    def shape(slow: int) -> object:
        return lambda j: (
            "front",
            2 + j,
            False,
            [("api", 3 + j, False, [("db", slow + j, False, [])])],
        )

    ranked = rank_root_causes(_traces(shape(5), 40), _traces(shape(80), 20))

    assert ranked[0].service == "db"
    assert ranked[0].self_time_change_ms == pytest.approx(75, abs=2)
    front = next(c for c in ranked if c.service == "front")
    # front got slower only through its callee: its self time did not move, the rest is inherited.
    assert front.self_time_z < 1
    assert front.inherited_change_ms == pytest.approx(75, abs=2)


def test_an_erroring_middle_service_is_the_error_origin_not_its_caller() -> None:
    def shape(failing: bool) -> object:
        return lambda j: ("web", 2, failing, [("cart", 3, failing, [("stock", 4, False, [])])])

    ranked = rank_root_causes(_traces(shape(False), 40), _traces(shape(True), 20))

    assert ranked[0].service == "cart"
    assert ranked[0].error_origins == 20
    web = next(c for c in ranked if c.service == "web")
    assert web.error_origins == 0  # it only passed the error on


def test_a_shared_dependency_slowing_both_callers_is_ranked_first() -> None:
    def tree(cache_ms: int) -> object:
        def build(j: int) -> object:
            return (
                "gateway",
                1 + j,
                False,
                [
                    ("search", 2 + j, False, [("cache", cache_ms + j, False, [])]),
                    ("profile", 2 + j, False, [("cache", cache_ms + j, False, [])]),
                ],
            )

        return build

    ranked = rank_root_causes(_traces(tree(3), 40), _traces(tree(40), 20))

    assert ranked[0].service == "cache"
    assert {c.service for c in ranked[1:3]} <= {"search", "profile", "gateway"}


def test_in_a_fan_out_only_the_slow_branch_is_blamed() -> None:
    def tree(slow_ms: int) -> object:
        def build(j: int) -> object:
            return (
                "bff",
                2 + j,
                False,
                [
                    ("users", 3 + j, False, []),
                    ("orders", 3 + j, False, []),
                    ("prices", slow_ms + j, False, []),
                    ("stock", 3 + j, False, []),
                ],
            )

        return build

    ranked = rank_root_causes(_traces(tree(3), 40), _traces(tree(60), 20))

    assert ranked[0].service == "prices"
    assert all(c.score < ranked[0].score / 3 for c in ranked[1:])


def test_a_delayed_network_shows_as_call_gaps_around_the_delayed_service() -> None:
    def with_gap(gap_ms: int) -> list[SpanRow]:
        rows = []
        for i in range(30):
            trace = f"{next(_ids):032x}"
            start = i * 1000 * MS
            jitter = i % 3
            callee_ms = 5 + jitter
            rows += [
                SpanRow(trace, "a" * 16, "", "front", "GET", start, (callee_ms + gap_ms + 2) * MS),
                SpanRow(
                    trace,
                    "b" * 16,
                    "a" * 16,
                    "pay",
                    "charge",
                    start + (1 + gap_ms // 2) * MS,
                    callee_ms * MS,
                ),
            ]
        return rows

    ranked = rank_root_causes(with_gap(2), with_gap(50))

    pay = next(c for c in ranked if c.service == "pay")
    assert pay.edge_gap_z > 10
    assert any("call gap front->pay" in note for note in pay.evidence)


def test_min_samples_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_samples"):
        rank_root_causes([], [], min_samples=0)


def test_a_failed_call_that_never_reached_the_callee_blames_the_callee() -> None:
    def calls(failing: bool) -> list[SpanRow]:
        rows = []
        for i in range(30):
            trace = f"{next(_ids):032x}"
            start = i * 1000 * MS
            error = failing and i % 2 == 0
            rows += [
                SpanRow(trace, "a" * 16, "", "web", "GET /", start, 10 * MS, error),
                # The caller's sidecar span names the callee; a failed call has no child.
                SpanRow(
                    trace, "b" * 16, "a" * 16, "web", "GET", start + MS, 5 * MS, error, peer="stock"
                ),
            ]
            if not error:
                rows.append(
                    SpanRow(trace, "c" * 16, "b" * 16, "stock", "GET /n", start + 2 * MS, 3 * MS)
                )
        return rows

    ranked = rank_root_causes(calls(False), calls(True))

    assert ranked[0].service == "stock"
    assert ranked[0].error_origins == 15
    assert next(c for c in ranked if c.service == "web").error_origins == 0


def _logged_calls(failing: bool) -> list[SpanRow]:
    """web -> (client span, no status) -> stock; stock logs an error under its span when
    failing, web logs one too (it passes the failure on). Nothing carries a status."""
    rows = []
    for i in range(30):
        trace = f"{next(_ids):032x}"
        start = i * 1000 * MS
        rows += [
            SpanRow(trace, "a" * 16, "", "web", "GET /", start, 10 * MS),
            SpanRow(trace, "b" * 16, "a" * 16, "web", "GET", start + MS, 6 * MS),
            SpanRow(trace, "c" * 16, "b" * 16, "stock", "GET /n", start + 2 * MS, 3 * MS),
        ]
    return rows


def test_an_error_logged_under_a_span_makes_it_fail_and_its_callers_only_pass_it_on() -> None:
    baseline, window = _logged_calls(False), _logged_calls(True)
    # Every other window call: stock logged an error under its span, web under its own.
    logged = {(s.trace_id, s.span_id) for s in window[::6] if s.service == "web"}
    logged |= {(s.trace_id, s.span_id) for s in window[2::6]}
    marked = with_logged_errors(window, logged)

    assert sum(s.error for s in marked) == 30 and not any(s.error for s in window)
    ranked = rank_root_causes(baseline, marked)

    # The client span between them carries no status: web's error still sits above stock's.
    assert ranked[0].service == "stock" and ranked[0].error_origins == 15
    assert next(c for c in ranked if c.service == "web").error_origins == 0
    assert with_logged_errors(window, set()) == window


def test_a_few_scattered_window_values_weigh_less_than_a_shift_seen_in_many() -> None:
    def op(service: str, values: list[int]) -> list[SpanRow]:
        return [
            SpanRow(f"{next(_ids):032x}", "a" * 16, "", service, "op", i * MS, v * MS)
            for i, v in enumerate(values)
        ]

    baseline = op("auth", [150 + i % 3 for i in range(12)]) + op(
        "db", [10 + i % 3 for i in range(200)]
    )
    # auth: five scattered values, median +32 ms; db: 200 values all +12 ms.
    window = op("auth", [146, 174, 183, 194, 219]) + op("db", [22 + i % 3 for i in range(200)])

    sampled = rank_root_causes(baseline, window)
    before = rank_root_causes(baseline, window, sampled_z=False)

    assert [c.service for c in sampled] == ["db", "auth"]
    assert [c.service for c in before] == ["auth", "db"]  # the baseline spread alone
