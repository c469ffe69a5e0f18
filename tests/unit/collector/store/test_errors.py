"""Engine messages become StoreUnavailable (retry) or StoreRejected (give up), minus secrets."""

from __future__ import annotations

from collector.store import StoreRejected, StoreUnavailable
from collector.store.errors import clickhouse_code, from_engine_message, scrub


def test_overload_and_timeouts_are_retryable() -> None:
    error = from_engine_message("Code: 241. DB::Exception: Memory limit exceeded", context="insert")

    assert isinstance(error, StoreUnavailable)
    assert error.code == 241
    assert str(error).startswith("insert: Code: 241.")


def test_sql_and_data_errors_are_rejections() -> None:
    syntax = from_engine_message("Code: 62. DB::Exception: Syntax error", context="query")
    no_code = from_engine_message("something odd", context="query")

    assert isinstance(syntax, StoreRejected) and syntax.code == 62
    assert isinstance(no_code, StoreRejected) and no_code.code is None


def test_connection_failures_are_unavailable_whatever_the_code() -> None:
    error = from_engine_message("Code: 36. cannot open", context="open", unavailable=True)

    assert isinstance(error, StoreUnavailable)


def test_secrets_are_scrubbed_and_messages_bounded() -> None:
    error = from_engine_message(
        "Code: 516. u:hunter2 authentication failed " + "x" * 5000, context="q", secret="hunter2"
    )

    assert "hunter2" not in str(error)
    assert "u:***" in str(error)
    assert len(str(error)) < 2100
    assert clickhouse_code("no code here") is None
    assert scrub("abc", None) == "abc"
