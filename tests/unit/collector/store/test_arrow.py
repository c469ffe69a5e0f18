"""Column dicts to Arrow by ClickHouse type, and Arrow results back to rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from collector.store import StoreRejected
from collector.store.arrow import arrow_type, rows_from_arrow, split_type_args, to_arrow_table


def test_split_type_args_respects_nesting() -> None:
    assert split_type_args("LowCardinality(String), Map(String, Array(UInt8)), Int8") == [
        "LowCardinality(String)",
        "Map(String, Array(UInt8))",
        "Int8",
    ]


@pytest.mark.parametrize(
    ("ch_type", "expected"),
    [
        ("LowCardinality(String)", pa.string()),
        ("DateTime64(9)", pa.timestamp("ns")),
        ("DateTime64(3, 'UTC')", pa.timestamp("ms")),
        ("DateTime", pa.timestamp("s")),
        ("Array(DateTime64(9))", pa.list_(pa.timestamp("ns"))),
        ("Map(LowCardinality(String), String)", pa.map_(pa.string(), pa.string())),
        ("Array(Map(LowCardinality(String), String))", pa.list_(pa.map_(pa.string(), pa.string()))),
        ("SimpleAggregateFunction(sum, UInt64)", pa.uint64()),
        ("Nullable(Float64)", pa.float64()),
        ("Bool", pa.bool_()),
    ],
)
def test_arrow_type_for_clickhouse_types(ch_type: str, expected: pa.DataType) -> None:
    assert arrow_type(ch_type) == expected


def test_aggregate_states_cannot_be_inserted() -> None:
    with pytest.raises(ValueError, match="cannot insert"):
        arrow_type("AggregateFunction(quantilesTDigest(0.5), UInt64)")


def test_timestamps_accept_ns_ints_and_aware_or_naive_datetimes() -> None:
    plus_two = timezone(timedelta(hours=2))
    table = to_arrow_table(
        "t",
        {"ts": [5, datetime(2024, 1, 1, 2, tzinfo=plus_two), datetime(2024, 1, 1)]},
        {"ts": "DateTime64(9)"},
    )

    midnight_ns = 1_704_067_200 * 10**9
    assert table["ts"].cast(pa.int64()).to_pylist() == [5, midnight_ns, midnight_ns]


def test_maps_accept_dicts_and_pairs_and_ready_arrow_arrays_pass() -> None:
    kind = "Map(LowCardinality(String), String)"
    ready = pa.array([1, 2], pa.int64())

    table = to_arrow_table(
        "t", {"m": [{"a": "1"}, [("b", "2")]], "n": ready}, {"m": kind, "n": "UInt64"}
    )

    assert table["m"].to_pylist() == [[("a", "1")], [("b", "2")]]
    assert table["n"].type == pa.uint64()


def test_every_bad_column_is_named_at_once() -> None:
    with pytest.raises(StoreRejected) as caught:
        to_arrow_table("t", {"a": ["x"], "b": [[1]]}, {"a": "UInt8", "b": "String"})

    assert "a (UInt8)" in str(caught.value)
    assert "b (String)" in str(caught.value)


def test_rows_turn_datetimes_maps_and_uint32_datetimes_into_python_values() -> None:
    result = pa.table(
        {
            "ts": pa.array([1_000_000_123], pa.timestamp("ns", tz="UTC")),
            "minute": pa.array([60], pa.uint32()),
            "plain": pa.array([7], pa.uint32()),
            "attrs": pa.array([[("k", "v")]], pa.map_(pa.string(), pa.string())),
            "events": pa.array([[[("a", "b")]]], pa.list_(pa.map_(pa.string(), pa.string()))),
        }
    )

    rows = rows_from_arrow(result, {"minute": "DateTime", "plain": "UInt32"})

    assert rows == [
        {
            "ts": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
            "minute": datetime(1970, 1, 1, 0, 1, tzinfo=UTC),
            "plain": 7,
            "attrs": {"k": "v"},
            "events": [{"a": "b"}],
        }
    ]
