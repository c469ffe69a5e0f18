"""Parameter values become ClickHouse value text (parsed with the declared type, never as SQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from collector.store import StoreRejected
from collector.store.params import format_params, params_text


def test_scalars() -> None:
    assert format_params(
        {
            "s": "a'b",
            "n": 5,
            "f": 1.5,
            "b": True,
            "d": date(2024, 2, 3),
            "t": datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC),
            "u": datetime(2024, 2, 3, 4, 5, 6, 7),
        }
    ) == {
        "s": "a'b",
        "n": "5",
        "f": "1.5",
        "b": "true",
        "d": "2024-02-03",
        "t": "2024-02-03 04:05:06",
        "u": "2024-02-03 04:05:06.000007",
    }


def test_top_level_strings_use_escaped_form() -> None:
    assert format_params({"s": "a\\b\tc\nd"}) == {"s": "a\\\\b\\tc\\nd"}


def test_containers_quote_and_escape_their_strings() -> None:
    assert format_params({"a": ["x'", "y\\"], "m": {"k": 1}, "t": ("a", 2)}) == {
        "a": "['x\\'', 'y\\\\']",
        "m": "{'k': 1}",
        "t": "('a', 2)",
    }


def test_unsupported_values_are_rejected() -> None:
    with pytest.raises(StoreRejected, match="unsupported query parameter type object"):
        params_text({"x": object()})
