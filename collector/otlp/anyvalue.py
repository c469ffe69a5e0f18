"""OTLP AnyValue / KeyValue -> strings, with the Collector's pcommon `AsString()` semantics."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["any_to_raw", "any_to_str", "attrs_to_map", "format_double"]

_EXP = re.compile(r"e([+-])0*(\d)")


def format_double(value: float) -> str:
    """A double the way Go's pcommon AsString prints it (ES6 number-to-string)."""
    if math.isnan(value) or math.isinf(value):
        name = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
        return f"json: unsupported value: {name}"
    magnitude = abs(value)
    if value == int(value) and magnitude < 1e21:
        return str(int(value))
    if 1e-6 <= magnitude < 1e21:
        return repr(value)
    return _EXP.sub(lambda m: f"e{m.group(1)}{m.group(2)}", repr(value))


def any_to_str(value: Any) -> str:
    """AnyValue -> str: strings as-is, ints decimal, bools true/false, arrays/maps as JSON."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return format_double(value.double_value)
    if kind is None:
        return ""
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return json.dumps(any_to_raw(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def any_to_raw(value: Any) -> Any:
    """AnyValue -> plain Python value (the shape Go's AsRaw gives, JSON-serialisable)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [any_to_raw(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_to_raw(kv.value) for kv in value.kvlist_value.values}
    return None


def attrs_to_map(attributes: Iterable[Any]) -> dict[str, str]:
    """KeyValue list -> {key: AsString(value)} with keys sorted (later duplicates win)."""
    items: list[tuple[str, str]] = []
    append = items.append
    for kv in attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            append((kv.key, value.string_value))
        elif kind == "int_value":
            append((kv.key, str(value.int_value)))
        else:
            append((kv.key, any_to_str(value)))
    # Stable sort on the key only, so a repeated key keeps its last value like a dict would.
    items.sort(key=_first)
    return dict(items)


def _first(item: tuple[str, str]) -> str:
    return item[0]
