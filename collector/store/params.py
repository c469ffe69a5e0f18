"""Query parameter values as the text ClickHouse parses for `{name:Type}` placeholders.

The embedded engine takes each parameter as text and parses it with the declared type, so the value
is data, never SQL: a top-level String is sent in ClickHouse's escaped (TSV) form; containers become
literals whose string elements are quoted and escaped (parsed as a value of that type, not as SQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from collector.store.arrow import utc_text
from collector.store.base import StoreRejected

__all__ = ["format_params", "params_text", "server_params"]


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _element(value: Any) -> str:
    """A value inside an Array/Map/Tuple literal."""
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, datetime | date):
        return _quoted(_top(value))
    if value is None:
        return "NULL"
    return _top(value)


def _top(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.translate(_TSV_ESCAPES)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        text = utc_text(value)
        return text[: -len(".000000")] if value.microsecond == 0 else text
    if isinstance(value, date):
        return value.isoformat()
    if value is None:
        return "\\N"
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        inner = ", ".join(_element(item) for item in items)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, Mapping):
        pairs = ", ".join(f"{_element(k)}: {_element(v)}" for k, v in value.items())
        return "{" + pairs + "}"
    raise TypeError(f"unsupported query parameter type {type(value).__name__}")


def format_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Text for each parameter; TypeError for a value type we do not know how to send."""
    return {name: _top(value) for name, value in (params or {}).items()}


def params_text(params: Mapping[str, Any] | None) -> dict[str, str]:
    """`format_params`, with an unsupported value reported as StoreRejected."""
    try:
        return format_params(params)
    except TypeError as exc:
        raise StoreRejected(f"query parameters: {exc}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _top(value)
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, set | frozenset):
        return [_plain(item) for item in sorted(value)]
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def server_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters for clickhouse-connect's binding, with datetimes as our UTC text (it would
    drop microseconds and shift by the server's zone) so both backends read the same values."""
    return {name: _plain(value) for name, value in (params or {}).items()}
