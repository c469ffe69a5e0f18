from __future__ import annotations

from opentelemetry.proto.common.v1 import common_pb2

from collector.otlp.anyvalue import any_to_str, attrs_to_map, format_double
from tests.unit.collector.helpers import kv


def _array(*values: object) -> common_pb2.AnyValue:
    value = common_pb2.AnyValue()
    value.array_value.values.extend(kv("_", v).value for v in values)
    return value


def test_scalars_use_collector_as_string_forms() -> None:
    assert any_to_str(kv("k", "text").value) == "text"
    assert any_to_str(kv("k", 42).value) == "42"
    assert any_to_str(kv("k", -7).value) == "-7"
    assert any_to_str(kv("k", True).value) == "true"
    assert any_to_str(kv("k", False).value) == "false"
    assert any_to_str(kv("k", b"\x01\x02").value) == "AQI="
    assert any_to_str(common_pb2.AnyValue()) == ""


def test_doubles_print_like_es6_numbers() -> None:
    assert format_double(1.0) == "1"
    assert format_double(1.5) == "1.5"
    assert format_double(-0.25) == "-0.25"
    assert format_double(1e21) == "1e+21"
    assert format_double(1e-7) == "1e-7"
    assert format_double(123456789.0) == "123456789"


def test_arrays_and_maps_become_compact_json_with_sorted_keys() -> None:
    assert any_to_str(_array(1, "a", True)) == '[1,"a",true]'
    value = common_pb2.AnyValue()
    value.kvlist_value.values.extend([kv("z", 1), kv("a", "x")])
    assert any_to_str(value) == '{"a":"x","z":1}'


def test_attribute_maps_are_sorted_by_key() -> None:
    result = attrs_to_map([kv("b", 1), kv("a", "x"), kv("c", 2.5)])
    assert list(result) == ["a", "b", "c"]
    assert result == {"a": "x", "b": "1", "c": "2.5"}
