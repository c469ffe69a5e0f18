"""The macro expander matches the ClickHouse plugin's expansions (pkg/macros/macros.go)."""

from __future__ import annotations

import pytest

from dashboards.macros import MacroError, TimeRange, expand, variable_names

RANGE = TimeRange(from_s=1_700_000_000.25, to_s=1_700_003_600.75, interval_s=30)


def test_time_filter_uses_whole_seconds_on_both_ends() -> None:
    assert expand("WHERE $__timeFilter(Timestamp)", RANGE) == (
        "WHERE Timestamp >= toDateTime(1700000000) AND Timestamp <= toDateTime(1700003600)"
    )


def test_time_filter_accepts_qualified_columns() -> None:
    assert expand("$__timeFilter(child.Timestamp)", RANGE).startswith("child.Timestamp >= ")


def test_millisecond_variants_use_from_unix_timestamp64_milli() -> None:
    assert expand("$__fromTime_ms $__toTime_ms", RANGE) == (
        "fromUnixTimestamp64Milli(1700000000250) fromUnixTimestamp64Milli(1700003600750)"
    )
    assert expand("$__timeFilter_ms(t)", RANGE) == (
        "t >= fromUnixTimestamp64Milli(1700000000250)"
        " AND t <= fromUnixTimestamp64Milli(1700003600750)"
    )


def test_from_and_to_time_with_or_without_parentheses() -> None:
    assert expand("$__fromTime, $__toTime()", RANGE) == (
        "toDateTime(1700000000), toDateTime(1700003600)"
    )


def test_time_interval_and_interval_seconds() -> None:
    assert expand("$__timeInterval(minute)", RANGE) == (
        "toStartOfInterval(toDateTime(minute), INTERVAL 30 second)"
    )
    assert expand("$__interval_s", TimeRange(0, 10, interval_s=0.2)) == "1"


def test_date_filter_uses_utc_dates() -> None:
    assert expand("$__dateFilter(d)", RANGE) == (
        "d >= toDate('2023-11-14') AND d <= toDate('2023-11-14')"
    )


def test_variables_single_multi_and_quoted() -> None:
    variables = {"svc": ["a", "o'b"], "one": "x", "n": "5"}
    assert expand("IN (${svc:singlequote})", RANGE, variables) == "IN ('a','o\\'b')"
    # as Grafana: a backslash is left as it is (ClickHouse then reads it as an escape, which
    # is why our dashboards quote percentencode output only)
    assert expand("${v:singlequote}", RANGE, {"v": "a\\"}) == "'a\\'"
    assert expand("IN (${svc:sqlstring})", RANGE, variables) == "IN ('a','o''b')"
    assert expand("$one ${one} ${n:raw}", RANGE, variables) == "x x 5"
    assert variable_names("${a:singlequote} $b $__timeFilter(c) ${__x}") == {"a", "b"}


def test_percentencode_is_grafanas_strict_uri_encoding() -> None:
    # (the input of Grafana's documented example; the output of its formatRegistry.ts, which
    # wraps a list in braces before encoding it whole: the docs leave the braces out)
    servers = {"servers": ["foo()bar BAZ", "test2"], "one": "a'b\\c é!*~"}
    assert expand("${servers:percentencode}", RANGE, servers) == "%7Bfoo%28%29bar%20BAZ%2Ctest2%7D"
    assert expand("${one:percentencode}", RANGE, servers) == "a%27b%5Cc%20%C3%A9%21%2A~"


def test_unknown_macro_is_an_error() -> None:
    with pytest.raises(MacroError, match=r"unknown macro \$__nope"):
        expand("$__nope(x)", RANGE)


def test_missing_variable_is_an_error_naming_it() -> None:
    with pytest.raises(MacroError, match="service"):
        expand("IN (${service:singlequote})", RANGE, {})


def test_wrong_argument_count_is_an_error() -> None:
    with pytest.raises(MacroError, match="expects 1 argument"):
        expand("$__timeFilter()", RANGE)
    with pytest.raises(MacroError, match="takes no arguments"):
        expand("$__fromTime(x)", RANGE)


def test_unsupported_variable_format_is_an_error() -> None:
    with pytest.raises(MacroError, match="unsupported format"):
        expand("${a:regex}", RANGE, {"a": "x"})


def test_time_range_checks_its_bounds() -> None:
    with pytest.raises(ValueError, match="ends before"):
        TimeRange(10, 5)
    with pytest.raises(ValueError, match="interval_s"):
        TimeRange(0, 5, interval_s=0)
