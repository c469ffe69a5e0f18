"""Expand the Grafana template variables and ClickHouse-plugin macros our dashboards use into SQL.

Grafana interpolates template variables in the browser, then the ClickHouse plugin's backend
(grafana/clickhouse-datasource `pkg/macros/macros.go`) expands `$__` macros. `expand()` does both,
the same way, so a panel's SQL can run against a store outside Grafana (tests, `dashboards sql`).

Template variables (`variables` maps a name to one value or a list of values), formatted as
Grafana's formatters do (grafana/scenes `formatRegistry.ts`):
  ${name} / $name            the value; a list joins with ','
  ${name:singlequote}        each value in single quotes (quotes escaped \\', backslashes NOT),
                             joined with ','
  ${name:sqlstring}          each value in single quotes ('' doubling), joined with ','
  ${name:percentencode}      encodeURIComponent, also of !'()*; a list as '{a,b}' encoded whole
  ${name:raw}                as ${name}
ClickHouse reads a backslash in a string literal as an escape, so no quoting formatter keeps a
value inside its quotes (`\\' OR 1=1 --` ends the literal after singlequote). Our dashboards
quote only percentencode output, which is [A-Za-z0-9-_.~%] alone, and decode it in SQL:
`decodeURLComponent('${name:percentencode}')`.
Macros (time range `[from_s, to_s]`, panel interval `interval_s`):
  $__timeFilter(col)         col >= toDateTime(from) AND col <= toDateTime(to)
  $__timeFilter_ms(col)      the same with fromUnixTimestamp64Milli(ms)
  $__dateFilter(col)         col >= toDate('YYYY-MM-DD') AND col <= toDate('YYYY-MM-DD')
  $__fromTime, $__toTime     toDateTime(from), toDateTime(to)
  $__fromTime_ms, $__toTime_ms   fromUnixTimestamp64Milli(ms)
  $__timeInterval(col)       toStartOfInterval(toDateTime(col), INTERVAL <interval_s> second)
  $__interval_s              the interval in whole seconds (at least 1)
Anything else that starts with `$__`, and any unknown variable, raises MacroError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = ["MACROS", "MacroError", "TimeRange", "expand", "variable_names"]


class MacroError(ValueError):
    """A query uses a macro or variable we cannot expand, or gives a macro wrong arguments."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A dashboard time range in epoch seconds (ms precision) and the panel's interval."""

    from_s: float
    to_s: float
    interval_s: float = 60.0

    def __post_init__(self) -> None:
        if self.to_s < self.from_s:
            raise ValueError(f"time range ends before it starts: {self.from_s} > {self.to_s}")
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")


# `${name}`, `${name:format}` or `$name`; names starting with `__` are macros, not variables.
_VARIABLE = re.compile(r"\$\{(?!__)(\w+)(?::(\w+))?\}|\$(?!__)([A-Za-z_]\w*)")
# `$__name` with an optional argument list without nested parentheses.
_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")


def variable_names(sql: str) -> set[str]:
    """The template variables `sql` refers to."""
    return {m.group(1) or m.group(3) for m in _VARIABLE.finditer(sql)}


def _quoted(value: str, style: str) -> str:
    if style == "singlequote":
        return "'" + value.replace("'", "\\'") + "'"  # (Grafana leaves backslashes as they are)
    return "'" + value.replace("'", "''") + "'"


def _percent_encoded(value: str) -> str:
    """JavaScript's encodeURIComponent, and !'()* too (Grafana's encodeURIComponentStrict)."""
    return quote(value, safe="-_.~")


def _format_variable(name: str, value: str | Sequence[str], fmt: str | None) -> str:
    values = [value] if isinstance(value, str) else list(value)
    if fmt in (None, "raw"):
        return ",".join(values)
    if fmt in ("singlequote", "sqlstring"):
        return ",".join(_quoted(v, fmt) for v in values)
    if fmt == "percentencode":
        return _percent_encoded(value if isinstance(value, str) else "{" + ",".join(values) + "}")
    raise MacroError(
        f"unsupported format ${{{name}:{fmt}}}: use percentencode, singlequote, sqlstring or raw"
    )


def _datetime(seconds: float) -> str:
    return f"toDateTime({math.floor(seconds)})"


def _datetime_ms(seconds: float) -> str:
    return f"fromUnixTimestamp64Milli({math.floor(seconds * 1000)})"


def _date(seconds: float) -> str:
    return f"toDate('{datetime.fromtimestamp(seconds, UTC):%Y-%m-%d}')"


def _one_arg(name: str, args: list[str]) -> str:
    if len(args) != 1 or not args[0]:
        raise MacroError(f"$__{name} expects 1 argument, got {len(args)}: {args!r}")
    return args[0]


def _range_filter(column: str, lower: str, upper: str) -> str:
    return f"{column} >= {lower} AND {column} <= {upper}"


def _expand_macro(name: str, args: list[str] | None, rng: TimeRange) -> str:
    seconds = max(math.floor(rng.interval_s), 1)
    plain = {
        "fromTime": _datetime(rng.from_s),
        "toTime": _datetime(rng.to_s),
        "fromTime_ms": _datetime_ms(rng.from_s),
        "toTime_ms": _datetime_ms(rng.to_s),
        "interval_s": str(seconds),
    }
    if name in plain:
        if args not in (None, [""]):
            raise MacroError(f"$__{name} takes no arguments, got {args!r}")
        return plain[name]
    if name not in MACROS:
        raise MacroError(f"unknown macro $__{name}; known: {', '.join(sorted(MACROS))}")
    column = _one_arg(name, args or [])
    if name == "timeFilter":
        return _range_filter(column, _datetime(rng.from_s), _datetime(rng.to_s))
    if name == "timeFilter_ms":
        return _range_filter(column, _datetime_ms(rng.from_s), _datetime_ms(rng.to_s))
    if name == "dateFilter":
        return _range_filter(column, _date(rng.from_s), _date(rng.to_s))
    return f"toStartOfInterval(toDateTime({column}), INTERVAL {seconds} second)"


MACROS = frozenset(
    {
        "timeFilter",
        "timeFilter_ms",
        "dateFilter",
        "fromTime",
        "toTime",
        "fromTime_ms",
        "toTime_ms",
        "timeInterval",
        "interval_s",
    }
)


def expand(
    sql: str, time_range: TimeRange, variables: Mapping[str, str | Sequence[str]] | None = None
) -> str:
    """`sql` with template variables and then macros expanded, as Grafana + the plugin do."""
    given = variables or {}
    missing = sorted(variable_names(sql) - set(given))
    if missing:
        raise MacroError(f"no value for template variable(s) {', '.join(missing)}")

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        return _format_variable(name, given[name], match.group(2))

    def macro(match: re.Match[str]) -> str:
        raw_args = match.group(2)
        args = None if raw_args is None else [a.strip() for a in raw_args.split(",")]
        return _expand_macro(match.group(1), args, time_range)

    return _MACRO.sub(macro, _VARIABLE.sub(variable, sql))
