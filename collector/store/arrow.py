"""Column dicts <-> Arrow tables, typed by the ClickHouse column types (both backends insert Arrow).

Accepted Python values per ClickHouse type (a column may also be a ready `pyarrow.Array`):
  DateTime64(p)   int ticks of that precision (ns for DateTime64(9)) or datetime (naive = UTC)
  DateTime        int seconds since the epoch or datetime
  Map(K, V)       dict or list of (key, value) pairs
  Array(T)        list of T (Nested columns are inserted as their `Name.Field` arrays)
  (U)IntN, FloatN, Bool, String, LowCardinality(T), Nullable(T), SimpleAggregateFunction(f, T)
Query results come back as dicts per row: datetimes UTC-aware (microseconds; select
toUnixTimestamp64Nano(...) for nanoseconds), Map as dict, Array as list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from collector.store.base import Rows, StoreRejected

__all__ = [
    "arrow_type",
    "column_types",
    "describe_sql",
    "needs_types",
    "rows_from_arrow",
    "split_type_args",
    "to_arrow_table",
    "utc_text",
]

_SCALARS: dict[str, pa.DataType] = {
    "String": pa.string(),
    "FixedString": pa.binary(),
    "UUID": pa.string(),
    "Bool": pa.bool_(),
    "Boolean": pa.bool_(),
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
    "Int8": pa.int8(),
    "Int16": pa.int16(),
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "Float32": pa.float32(),
    "Float64": pa.float64(),
    "Date": pa.date32(),
    "DateTime": pa.timestamp("s"),
}
_PRECISION_UNIT = {0: "s", 3: "ms", 6: "us", 9: "ns"}


def split_type_args(args: str) -> list[str]:
    """Split `A, B(C, D), E` at top-level commas."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(args):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(args[start:index].strip())
            start = index + 1
    parts.append(args[start:].strip())
    return [part for part in parts if part]


def arrow_type(ch_type: str) -> pa.DataType:
    """The Arrow type ClickHouse reads into `ch_type`; ValueError for types we cannot insert."""
    ch_type = ch_type.strip()
    if ch_type in _SCALARS:
        return _SCALARS[ch_type]
    name, _, rest = ch_type.partition("(")
    args = split_type_args(rest[:-1]) if rest.endswith(")") else []
    if name in ("LowCardinality", "Nullable") and len(args) == 1:
        return arrow_type(args[0])
    if name == "SimpleAggregateFunction" and len(args) == 2:
        return arrow_type(args[1])
    if name == "Array" and len(args) == 1:
        return pa.list_(arrow_type(args[0]))
    if name == "Map" and len(args) == 2:
        return pa.map_(arrow_type(args[0]), arrow_type(args[1]))
    if name == "DateTime64" and args and args[0].isdigit() and int(args[0]) in _PRECISION_UNIT:
        return pa.timestamp(_PRECISION_UNIT[int(args[0])])
    if name == "DateTime" and len(args) == 1:
        return pa.timestamp("s")
    if name == "FixedString":
        return pa.binary()
    raise ValueError(f"cannot insert into a column of type {ch_type}")


def to_arrow_table(
    table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]
) -> pa.Table:
    """Build the Arrow table for an insert; StoreRejected names every bad column at once."""
    if not columns:
        raise StoreRejected(f"insert into {table}: no columns given")
    unknown = sorted(set(columns) - set(types))
    if unknown:
        raise StoreRejected(f"insert into {table}: unknown or non-insertable columns {unknown}")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise StoreRejected(f"insert into {table}: columns differ in length {lengths}")
    arrays: list[pa.Array] = []
    problems: list[str] = []
    for name, values in columns.items():
        try:
            kind = arrow_type(types[name])
            if isinstance(values, pa.Array | pa.ChunkedArray):
                arrays.append(values if values.type == kind else values.cast(kind))
            else:
                # pyarrow takes naive datetimes as UTC, converts aware ones; maps as dicts or pairs.
                arrays.append(pa.array(values, type=kind))
        except (ValueError, TypeError, OverflowError, pa.ArrowException) as exc:
            problems.append(f"{name} ({types[name]}): {exc}")
    if problems:
        raise StoreRejected(f"insert into {table}: bad values in " + "; ".join(problems))
    return pa.Table.from_arrays(arrays, names=list(columns))


def _utc_micro(kind: pa.DataType) -> pa.DataType:
    """`kind` with every timestamp made timestamp[us, UTC] (so as_py gives plain datetimes)."""
    if pa.types.is_timestamp(kind):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pa.list_(_utc_micro(kind.value_type))
    if pa.types.is_map(kind):
        return pa.map_(_utc_micro(kind.key_type), _utc_micro(kind.item_type))
    return kind


def _has_map(kind: pa.DataType) -> bool:
    if pa.types.is_map(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _has_map(kind.value_type)
    return False


def _maps_to_dicts(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_map(kind):
        return {k: _maps_to_dicts(v, kind.item_type) for k, v in value}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return [_maps_to_dicts(v, kind.value_type) for v in value]
    return value


def has_uint32(kind: pa.DataType) -> bool:
    """True when `kind` holds uint32 anywhere: ClickHouse writes DateTime that way in Arrow."""
    if pa.types.is_uint32(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return has_uint32(kind.value_type)
    if pa.types.is_map(kind):
        return has_uint32(kind.key_type) or has_uint32(kind.item_type)
    return False


def _timestamps_as_int64(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind):
        return pa.int64()
    if pa.types.is_list(kind):
        return pa.list_(_timestamps_as_int64(kind.value_type))
    if pa.types.is_map(kind):
        return pa.map_(_timestamps_as_int64(kind.key_type), _timestamps_as_int64(kind.item_type))
    return kind


def _restore_datetime(column: pa.ChunkedArray, ch_type: str | None) -> pa.ChunkedArray:
    """Turn the uint32 seconds ClickHouse sends for DateTime back into timestamps."""
    if ch_type is None or "DateTime" not in ch_type or not has_uint32(column.type):
        return column
    try:
        target = arrow_type(ch_type)
        return column.cast(_timestamps_as_int64(target)).cast(target)
    except (ValueError, pa.ArrowException):
        return column


def rows_from_arrow(result: pa.Table, ch_types: Mapping[str, str] | None = None) -> Rows:
    """Rows as dicts, with the value conventions in the module docstring.

    `ch_types` (column -> ClickHouse type, from DESCRIBE) is needed only when the result has
    uint32 columns, to tell DateTime from UInt32.
    """
    columns: dict[str, list[Any]] = {}
    for name, column in zip(result.column_names, result.columns, strict=True):
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
            kind = kind.value_type
        column = _restore_datetime(column, (ch_types or {}).get(name))
        kind = column.type
        target = _utc_micro(kind)
        if target != kind:
            column = column.cast(target, safe=False)
        values = column.to_pylist()
        if _has_map(target):
            values = [_maps_to_dicts(value, target) for value in values]
        columns[name] = values
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def needs_types(result: pa.Table) -> bool:
    """True when rows_from_arrow needs the ClickHouse column types of `result`."""
    return any(has_uint32(field.type) for field in result.schema)


def column_types(described: pa.Table) -> dict[str, str]:
    """Column name -> ClickHouse type from a DESCRIBE result."""
    names = described["name"].to_pylist()
    return dict(zip(names, described["type"].to_pylist(), strict=True))


def describe_sql(sql: str) -> str:
    """The DESCRIBE statement that gives the result column types of the SELECT `sql`."""
    return f"DESCRIBE TABLE ({sql.strip().rstrip(';')})"


def utc_text(value: datetime) -> str:
    """`value` as ClickHouse DateTime64 text in UTC (naive datetimes are taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")
