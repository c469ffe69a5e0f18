"""A small declarative validator for JSON/YAML documents (the sidecar's policy document).

Specs describe values: `Int`, `Float`, `Bool`, `Str` (length, pattern), `OneOf` (literals),
`ListOf`, `DictOf`, `Nullable` and `Model` (named fields with defaults, unknown keys rejected,
`before` hooks that rewrite the raw input and `after` checks over the validated values).
`validate(spec, value)` returns the normalized plain data (defaults filled in, in declaration
order) or raises `SchemaError` listing EVERY problem as "path: message" (`routes[0].retry.on[1]`).

Numbers, booleans and strings are coerced like pydantic's lax mode, whose rules this module
replaced in sidecar/config.py (pydantic cost the sidecar process 16 MB of RSS, issue 3): "5" and
5.0 are ints, True is 1, "yes" is True, but 1.5 is not an int and 5 is not a string. Messages keep
pydantic's wording so control-plane clients see the same text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "REQUIRED",
    "Bool",
    "DictOf",
    "Field",
    "Float",
    "Int",
    "Invalid",
    "ListOf",
    "Model",
    "Nullable",
    "OneOf",
    "SchemaError",
    "Spec",
    "Str",
    "format_path",
    "validate",
]

Path = tuple[str | int, ...]


class Invalid(ValueError):
    """Raised by a `before`/`after` hook: the value at the hook's path is invalid (the message)."""


class SchemaError(ValueError):
    """The document is invalid; `errors` lists every problem as "path: message"."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))


class _Bad:
    """The result of a value with problems (already recorded)."""

    __slots__ = ()


BAD: Final = _Bad()
REQUIRED: Final[Any] = object()  # a Field default: the key must be present


def format_path(path: Path) -> str:
    """("routes", 0, "retry") -> "routes[0].retry"; the empty path is "(document)"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(document)"


class _Errors:
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: Path, message: str) -> _Bad:
        self.items.append(f"{format_path(path)}: {message}")
        return BAD


class Spec:
    """A value's schema: `check` returns the normalized value, or BAD after recording problems."""

    __slots__ = ()

    def check(self, value: Any, path: Path, errors: _Errors) -> Any:
        raise NotImplementedError


def _bounds(
    value: float, path: Path, errors: _Errors, gt: float | None, ge: float | None, le: float | None
) -> Any:
    if gt is not None and not value > gt:
        return errors.add(path, f"Input should be greater than {gt}")
    if ge is not None and not value >= ge:
        return errors.add(path, f"Input should be greater than or equal to {ge}")
    if le is not None and not value <= le:
        return errors.add(path, f"Input should be less than or equal to {le}")
    return value


_INT_TEXT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?")


@dataclass(frozen=True, slots=True)
class Int(Spec):
    """An integer: also True/False, whole floats and strings like " 7 ", "1_000" or "5.0"."""

    gt: int | None = None
    ge: int | None = None
    le: int | None = None

    def check(self, value: Any, path: Path, errors: _Errors) -> Any:
        if isinstance(value, int):
            number = int(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                return errors.add(path, "Input should be a finite number")
            if not value.is_integer():
                return errors.add(
                    path, "Input should be a valid integer, got a number with a fractional part"
                )
            if abs(value) >= 2**63:
                return errors.add(path, "Input should be a valid integer, the number is too large")
            number = int(value)
        elif isinstance(value, str):
            text = value.strip()
            if not _INT_TEXT.fullmatch(text):
                return errors.add(
                    path, "Input should be a valid integer, unable to parse string as an integer"
                )
            try:
                number = int(text.partition(".")[0])
            except ValueError:  # (more digits than int() reads: 4,300)
                return errors.add(path, "Input should be a valid integer, the number is too large")
        else:
            return errors.add(path, "Input should be a valid integer")
        return _bounds(number, path, errors, self.gt, self.ge, self.le)


@dataclass(frozen=True, slots=True)
class Float(Spec):
    """A finite number, as a float: also ints, True/False and strings like "2.5" or "1e3".

    Not inf or nan (pydantic's allow_inf_nan=False): JSON has neither, so a document holding one
    (Python's json reads 1e999, Infinity and NaN) could not be shown or pushed as JSON, and no
    setting means anything at infinity (where a field takes null, null is its "none")."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None

    def check(self, value: Any, path: Path, errors: _Errors) -> Any:
        if isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:  # an int past float's range (10**400)
                return errors.add(path, "Input should be a finite number")
        elif isinstance(value, str):
            text = value.strip()
            try:
                if not text.isascii():
                    raise ValueError(text)
                number = float(text)
            except ValueError:
                return errors.add(
                    path, "Input should be a valid number, unable to parse string as a number"
                )
        else:
            return errors.add(path, "Input should be a valid number")
        if not math.isfinite(number):
            return errors.add(path, "Input should be a finite number")
        return _bounds(number, path, errors, self.gt, self.ge, self.le)


_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


@dataclass(frozen=True, slots=True)
class Bool(Spec):
    """A boolean: also 0/1 and "true"/"false", "yes"/"no", "on"/"off", "t"/"f", "y"/"n"."""

    def check(self, value: Any, path: Path, errors: _Errors) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, str)):
            key = value.lower() if isinstance(value, str) else str(value)
            if key in _TRUE:
                return True
            if key in _FALSE:
                return False
            return errors.add(path, "Input should be a valid boolean, unable to interpret input")
        if isinstance(value, float) and value in (0.0, 1.0):
            return value == 1.0
        return errors.add(path, "Input should be a valid boolean")


@dataclass(frozen=True, slots=True)
class Str(Spec):
    """A string (never a number) with optional length bounds and a regex it must match."""

    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None  # as written in messages; `$` matches only at the very end
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.pattern is not None:
            # Rust-regex semantics (pydantic's): `$` is the end of the text, not before a "\n"
            regex = re.compile(self.pattern.replace("$", r"\Z"))
            object.__setattr__(self, "_regex", regex)

    def check(self, value: Any, path: Path, errors: _Errors) -> Any:
        if not isinstance(value, str):
            return errors.add(path, "Input should be a valid string")
        if self.min_length is not None and len(value) < self.min_length:
            unit = "character" if self.min_length == 1 else "characters"
            return errors.add(path, f"String should have at least {self.min_length} {unit}")
        if self.max_length is not None and len(value) > self.max_length:
            unit = "character" if self.max_length == 1 else "characters"
            return errors.add(path, f"String should have at most {self.max_length} {unit}")
        if self._regex is not None and not self._regex.search(value):
            return errors.add(path, f"String should match pattern '{self.pattern}'")
        return value


@dataclass(frozen=True, slots=True)
class OneOf(Spec):
    """One of the given strings, exactly."""

    values: tuple[str, ...]

    def check(self, value: Any, path: Path, errors: _Errors) -> Any:
        if isinstance(value, str) and value in self.values:
            return value
        quoted = [f"'{v}'" for v in self.values]
        listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        return errors.add(path, f"Input should be {listed}")


@dataclass(frozen=True, slots=True)
class Nullable(Spec):
    """None, or a value of `spec`."""

    spec: Spec

    def check(self, value: Any, path: Path, errors: _Errors) -> Any:
        return None if value is None else self.spec.check(value, path, errors)


Hook = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class ListOf(Spec):
    """A list (or tuple) of `item`s; `after` may check or rewrite the validated list."""

    item: Spec
    min_length: int = 0
    after: Hook | None = None

    def check(self, value: Any, path: Path, errors: _Errors) -> Any:
        if not isinstance(value, (list, tuple)):
            return errors.add(path, "Input should be a valid list")
        out = [self.item.check(v, (*path, i), errors) for i, v in enumerate(value)]
        if any(v is BAD for v in out):
            return BAD
        if len(out) < self.min_length:
            item = "item" if self.min_length == 1 else "items"
            return errors.add(
                path,
                f"List should have at least {self.min_length} {item} after validation, "
                f"not {len(out)}",
            )
        return _run_hook(self.after, out, path, errors)


@dataclass(frozen=True, slots=True)
class DictOf(Spec):
    """A mapping with keys of `key` (a Str) and values of `value`; a bad key's path is the key."""

    key: Spec
    value: Spec
    before: Hook | None = None

    def check(self, value: Any, path: Path, errors: _Errors) -> Any:
        value = _run_hook(self.before, value, path, errors)
        if value is BAD:
            return BAD
        if not isinstance(value, Mapping):
            return errors.add(path, "Input should be a valid dictionary")
        out: dict[Any, Any] = {}
        bad = False
        for k, v in value.items():
            key = self.key.check(k, (*path, k), errors)
            item = self.value.check(v, (*path, k), errors)
            bad = bad or key is BAD or item is BAD
            out[k] = item
        return BAD if bad else out


@dataclass(frozen=True, slots=True)
class Field:
    """A model field: its spec and default (REQUIRED: no default; a default is raw input,
    validated like a given value); `before` rewrites the raw value, `after` the validated one."""

    spec: Spec
    default: Any = REQUIRED
    before: Hook | None = None
    after: Hook | None = None


def _run_hook(hook: Hook | None, value: Any, path: Path, errors: _Errors) -> Any:
    if hook is None:
        return value
    try:
        return hook(value)
    except Invalid as exc:
        return errors.add(path, str(exc))


@dataclass(frozen=True, slots=True)
class Model(Spec):
    """A mapping of named fields -> a dict in declaration order with every default filled in.

    `before` rewrites the raw input (e.g. a "host:port" shorthand); `after` checks the validated
    dict (relations between fields) once every field is valid; Invalid from either is reported at
    the model's path.
    """

    name: str  # what the value is, in messages
    fields: Mapping[str, Field]
    before: Hook | None = None
    after: tuple[Hook, ...] = ()

    def check(self, value: Any, path: Path, errors: _Errors) -> Any:
        value = _run_hook(self.before, value, path, errors)
        if value is BAD:
            return BAD
        if not isinstance(value, Mapping):
            return errors.add(path, f"Input should be a valid dictionary ({self.name})")
        out: dict[str, Any] = {}
        bad = False
        for name, spec in self.fields.items():
            where = (*path, name)
            if name in value:
                raw = value[name]
                if spec.before is not None:
                    raw = _run_hook(spec.before, raw, where, errors)
            elif spec.default is REQUIRED:
                raw = errors.add(where, "Field required")
            else:
                raw = spec.default
            item = BAD if raw is BAD else spec.spec.check(raw, where, errors)
            if item is BAD:
                bad = True
            elif spec.after is not None:
                item = _run_hook(spec.after, item, where, errors)
                bad = bad or item is BAD
            out[name] = item
        for key in value:
            if key not in out:  # every field is in `out`
                bad = True
                errors.add((*path, key), "unknown field")
        if bad:
            return BAD
        for check in self.after:
            if _run_hook(check, out, path, errors) is BAD:
                return BAD
        return out


def validate(spec: Spec, value: Any) -> Any:
    """The normalized `value`, or SchemaError listing every problem found in it."""
    errors = _Errors()
    out = spec.check(value, (), errors)
    if out is BAD or errors.items:
        raise SchemaError(errors.items)
    return out
