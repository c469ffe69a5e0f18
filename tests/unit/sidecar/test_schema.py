from __future__ import annotations

from typing import Any

import pytest

from sidecar.schema import (
    Bool,
    DictOf,
    Field,
    Float,
    Int,
    Invalid,
    ListOf,
    Model,
    Nullable,
    OneOf,
    SchemaError,
    Spec,
    Str,
    format_path,
    validate,
)


def errors_of(spec: Spec, value: Any) -> tuple[str, ...]:
    with pytest.raises(SchemaError) as caught:
        validate(spec, value)
    return caught.value.errors


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), (True, 1), (5.0, 5), (" 7 ", 7), ("1_000", 1000), ("-5.00", -5), ("+3", 3)],
)
def test_int_coerces_like_pydantic_lax_mode(value: Any, expected: int) -> None:
    out = validate(Int(), value)

    assert out == expected and type(out) is int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "got a number with a fractional part"),
        ("1.5", "unable to parse string as an integer"),
        ("0x10", "unable to parse string as an integer"),
        ("5.", "unable to parse string as an integer"),
        (float("inf"), "Input should be a finite number"),
        (None, "Input should be a valid integer"),
        ([1], "Input should be a valid integer"),
    ],
)
def test_int_rejects_what_is_not_a_whole_number(value: Any, message: str) -> None:
    (error,) = errors_of(Int(), value)

    assert error.startswith("(document): ") and message in error


def test_bounds_are_checked_with_their_numbers_in_the_message() -> None:
    assert errors_of(Int(ge=1, le=10), 0) == (
        "(document): Input should be greater than or equal to 1",
    )
    assert errors_of(Int(ge=1, le=10), 11) == (
        "(document): Input should be less than or equal to 10",
    )
    assert errors_of(Float(gt=0), 0) == ("(document): Input should be greater than 0",)
    assert validate(Float(gt=0, le=1), "0.5") == 0.5


def test_float_accepts_numbers_and_numeric_strings_as_floats() -> None:
    assert [validate(Float(), v) for v in (1, True, "2.5", " 1e3 ", -0.5)] == [
        1.0,
        1.0,
        2.5,
        1000.0,
        -0.5,
    ]
    assert type(validate(Float(), 1)) is float
    assert "unable to parse" in errors_of(Float(), "١")[0]  # only ASCII digits
    assert errors_of(Float(), None) == ("(document): Input should be a valid number",)


@pytest.mark.parametrize(
    "value",
    [float("inf"), float("-inf"), float("nan"), "inf", " -Infinity ", "nan", "1e999", 10**400],
    ids=["inf", "-inf", "nan", "'inf'", "'-Infinity'", "'nan'", "'1e999'", "10**400"],
)
def test_float_refuses_what_is_not_finite(value: Any) -> None:
    # inf was taken (as pydantic's default does) and crashed the sidecar building the config
    # (int(inf) in the timeout layer) or, on a hot reload, stopped reloading; 10**400 raised
    # OverflowError out of parse_config; a JSON document cannot hold either
    assert errors_of(Float(gt=0), value) == ("(document): Input should be a finite number",)


def test_int_refuses_more_digits_than_int_reads_with_a_clear_error() -> None:
    (error,) = errors_of(Int(le=10), "1" * 5000)  # int() raised ValueError past 4,300 digits

    assert error == "(document): Input should be a valid integer, the number is too large"


def test_bool_accepts_the_usual_spellings_only() -> None:
    assert [validate(Bool(), v) for v in (True, 1, 0, "YES", "off", "t", 1.0)] == [
        True,
        True,
        False,
        True,
        False,
        True,
        True,
    ]
    assert "unable to interpret" in errors_of(Bool(), "maybe")[0]
    assert "unable to interpret" in errors_of(Bool(), 2)[0]
    assert errors_of(Bool(), 0.5) == ("(document): Input should be a valid boolean",)


def test_strings_are_never_numbers_and_patterns_end_at_the_end() -> None:
    spec = Str(min_length=1, max_length=3, pattern=r"^[a-z]+$")

    assert validate(spec, "abc") == "abc"
    assert errors_of(spec, 5) == ("(document): Input should be a valid string",)
    assert "at least 1 character" in errors_of(spec, "")[0]
    assert "at most 3 characters" in errors_of(spec, "abcd")[0]
    assert errors_of(spec, "ab\n") == ("(document): String should match pattern '^[a-z]+$'",)


def test_one_of_lists_the_choices() -> None:
    assert validate(OneOf(("a", "b")), "a") == "a"
    assert errors_of(OneOf(("a", "b", "c")), "A") == (
        "(document): Input should be 'a', 'b' or 'c'",
    )
    assert errors_of(OneOf(("a",)), 1) == ("(document): Input should be 'a'",)


SERVER = Model(
    "a server",
    {
        "host": Field(Str(min_length=1)),
        "port": Field(Int(ge=1, le=65535), 80),
        "tags": Field(ListOf(Str(), after=lambda v: [t.lower() for t in v]), []),
        "weights": Field(DictOf(Str(pattern=r"^[a-z]+$"), Int(gt=0)), {}),
        "backup": Field(Nullable(Str()), None),
    },
)


def _ordered(m: dict[str, Any]) -> None:
    if m["low"] > m["high"]:
        raise Invalid("low must be <= high")


DOC = Model(
    "the document",
    {
        "servers": Field(ListOf(SERVER, min_length=1)),
        "primary": Field(SERVER, {"host": "localhost"}),
        "low": Field(Int(), 0),
        "high": Field(Int(), 10),
    },
    after=(_ordered,),
)


def test_a_valid_document_comes_back_normalized_with_defaults_in_declaration_order() -> None:
    out = validate(DOC, {"high": "20", "servers": [{"host": "a", "tags": ["X"]}]})

    assert out == {
        "servers": [{"host": "a", "port": 80, "tags": ["x"], "weights": {}, "backup": None}],
        "primary": {"host": "localhost", "port": 80, "tags": [], "weights": {}, "backup": None},
        "low": 0,
        "high": 20,
    }
    assert list(out) == ["servers", "primary", "low", "high"]


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    doc = {
        "servers": [
            {"host": "", "port": 0, "extra": 1},
            "not a server",
            {"host": "b", "weights": {"Bad": 1, "ok": 0}, "tags": "x"},
        ],
        "primary": {},
        "low": 5,
        "high": 1,
        "surprise": True,
    }

    errors = errors_of(DOC, doc)

    assert errors == (
        "servers[0].host: String should have at least 1 character",
        "servers[0].port: Input should be greater than or equal to 1",
        "servers[0].extra: unknown field",
        "servers[1]: Input should be a valid dictionary (a server)",
        "servers[2].tags: Input should be a valid list",
        "servers[2].weights.Bad: String should match pattern '^[a-z]+$'",
        "servers[2].weights.ok: Input should be greater than 0",
        "primary.host: Field required",
        "surprise: unknown field",
    )  # low > high is only checked once every field is valid


def test_after_checks_and_hooks_report_at_their_path() -> None:
    assert errors_of(DOC, {"servers": [{"host": "a"}], "low": 5, "high": 1}) == (
        "(document): low must be <= high",
    )
    assert (
        "List should have at least 1 item after validation, not 0"
        in errors_of(DOC, {"servers": []})[0]
    )

    def shorthand(value: Any) -> Any:
        if isinstance(value, str):
            if ":" not in value:
                raise Invalid(f"{value!r} is not host:port")
            host, _, port = value.partition(":")
            return {"host": host, "port": port}
        return value

    spec = ListOf(Model("a server", SERVER.fields, before=shorthand))
    assert validate(spec, ["h:81"])[0]["port"] == 81
    assert errors_of(spec, ["h:0", "h"]) == (
        "[0].port: Input should be greater than or equal to 1",
        "[1]: 'h' is not host:port",
    )


def test_paths_are_dotted_with_indexes_in_brackets() -> None:
    assert format_path(("routes", 0, "retry", "on", 1)) == "routes[0].retry.on[1]"
    assert format_path(("upstreams", 5)) == "upstreams[5]"
    assert format_path(()) == "(document)"
