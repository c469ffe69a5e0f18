"""OTLP protobuf encoding of span batches (ExportTraceServiceRequest), written by hand for speed.

The generated opentelemetry-proto classes cost more per span (bench/sidecar_telemetry.py
measures both); the wire format here is checked by decoding it with those classes in the tests.
Attribute encodings repeat across spans (method, upstream, route, status), so they are cached.
Compiled (`make native`), a batch given as a list is written by sidecar/_h1fast.c's
encode_spans, the same bytes in one pass (tests/unit/sidecar/test_h1fast.py compares them).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Final

from sidecar.http import FAST_ENCODE_SPANS, AttrValue
from sidecar.telemetry.spans import AttrTemplate, SpanRecord

__all__ = ["TraceEncoder", "encode_key_values", "field", "rejected_spans"]

_PACK_Q: Final = struct.Struct("<Q").pack
# start_time_unix_nano (7, fixed64, its tag in the cached head), end_time_unix_nano (8, fixed64)
_PACK_TIMES: Final = struct.Struct("<QBQ").pack
_PACK_I: Final = struct.Struct("<I").pack
_PACK_D: Final = struct.Struct("<d").pack
_SMALL_VARINTS: Final = tuple(bytes((n,)) for n in range(128))
_PACK_BB: Final = struct.Struct("<BB").pack
_VARINTS_2: Final[dict[int, bytes]] = {}  # two-byte varints met so far (at most 16256)
_CACHE_LIMIT: Final = 4096
_SET_CACHE_LIMIT: Final = 512  # attribute sets cached whole
_SET_MISSES: Final = 64  # this many misses in a row: stop looking sets up for _SET_SKIP spans
_SET_SKIP: Final = 4096
# Span.flags bits 8 and 9: "has is_remote" and "parent is remote" (the parent lives in the app).
_FLAG_HAS_REMOTE: Final = 0x100
_FLAG_REMOTE: Final = 0x200
# sidecar/_h1fast.c's encode_spans (compiled mode): the same bytes as encode below, or None for
# a batch with what only this one writes (a lone surrogate as '?', a list value, a huge int)
_FAST_ENCODE_SPANS: Final = FAST_ENCODE_SPANS


def _varint(value: int) -> bytes:
    if value < 128:
        return _SMALL_VARINTS[value]
    if value < 16384:  # (span and attribute lengths: cached, they repeat)
        encoded = _VARINTS_2.get(value)
        if encoded is None:
            encoded = _VARINTS_2[value] = _PACK_BB((value & 0x7F) | 0x80, value >> 7)
        return encoded
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int64(value: int) -> bytes:
    # Negative int64 values are varints of their 64-bit two's complement (10 bytes).
    return _varint(value & 0xFFFFFFFFFFFFFFFF if value < 0 else value)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _utf8(text: str) -> bytes:
    """`text` as UTF-8; a lone surrogate (a JSON escape such as \\ud800 in a JWT claim that
    became an attribute) turns into '?' instead of failing the encoding of its whole batch."""
    return text.encode("utf-8", "replace")


def _any_value(value: AttrValue) -> bytes:
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _int64(value)
    if isinstance(value, float):
        return b"\x21" + _PACK_D(value)
    return _field(b"\x0a", _utf8(str(value)))


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited protobuf field: `tag` (one or more bytes), length, payload."""
    return tag + _varint(len(payload)) + payload


def _key_value(key: str, value: AttrValue) -> bytes:
    return _field(b"\x0a", _utf8(key)) + _field(b"\x12", _any_value(value))


def encode_key_values(tag: bytes, items: Iterable[tuple[str, AttrValue]]) -> bytes:
    """Each (key, value) as a repeated KeyValue field with the given one-byte tag."""
    return b"".join(_field(tag, _key_value(k, v)) for k, v in items)


class TraceEncoder:
    """Encodes span batches of one resource (this sidecar) into ExportTraceServiceRequest bytes."""

    __slots__ = (
        "_attr_cache",
        "_attr_count",
        "_flags",
        "_int_attrs",
        "_last",
        "_misses",
        "_name_cache",
        "_resource",
        "_scope",
        "_set_cache",
        "_skip",
        "_str_attrs",
    )

    def __init__(
        self,
        resource: Sequence[tuple[str, AttrValue]],
        scope_name: str = "meshlens.sidecar",
        scope_version: str = "",
    ) -> None:
        # Resource{attributes=1}; InstrumentationScope{name=1, version=2}
        self._resource = _field(b"\x0a", encode_key_values(b"\x0a", resource))
        scope = _field(b"\x0a", scope_name.encode())
        if scope_version:
            scope += _field(b"\x12", scope_version.encode())
        self._scope = _field(b"\x0a", scope)
        self._attr_cache: dict[tuple[str, AttrValue, type], bytes] = {}
        self._str_attrs: dict[str, dict[str, bytes]] = {}
        self._int_attrs: dict[str, dict[int, bytes]] = {}
        self._attr_count = 0
        # span name -> (kind, the name (field 5), kind (6) and start time tag (7) encoded)
        self._name_cache: dict[str, tuple[int, bytes]] = {}
        # whole attribute sets, values -> (keys, encoding): spans of one route and endpoint
        # repeat the same set; misses (e.g. a path per request) turn it off for a while
        self._set_cache: dict[tuple[AttrValue, ...], tuple[tuple[str, ...], bytes]] = {}
        # span name -> (keys, values, encoding) of the last cached set of a span of that name
        self._last: dict[str, tuple[tuple[str, ...], tuple[AttrValue, ...], bytes]] = {}
        self._flags: dict[int, bytes] = {}  # Span.flags -> its field (a handful of values)
        self._misses = 0
        self._skip = 0

    def encode(self, spans: Iterable[SpanRecord]) -> bytes:
        """One ExportTraceServiceRequest with one ResourceSpans and one ScopeSpans."""
        if _FAST_ENCODE_SPANS is not None and type(spans) is list:  # (compiled: in C)
            body = _FAST_ENCODE_SPANS(self._resource, self._scope, spans)
            if body is not None:
                return body
        # The same bytes as nesting _field() calls, but the batch is copied once (one join of
        # all the pieces) instead of once per level of nesting.
        parts = [b"", self._scope]  # [0]: the outer headers, known once the size is
        size = len(self._scope)  # of ScopeSpans{scope=1, spans=2}
        for span in spans:
            encoded = self._span(span)
            head = b"\x12" + _varint(len(encoded))
            parts.append(head)
            parts.append(encoded)
            size += len(head) + len(encoded)
        # ResourceSpans{resource=1, scope_spans=2}, inside ExportTraceServiceRequest{1}
        resource_head = self._resource + b"\x12" + _varint(size)
        parts[0] = b"\x0a" + _varint(len(resource_head) + size) + resource_head
        return b"".join(parts)

    def _attr(self, key: str, value: AttrValue) -> bytes:
        # str and int values (nearly all) are looked up by key, then by value: two lookups of
        # objects whose hashes are cached, no key tuple built per attribute. Exact types only
        # (True == 1 == 1.0 must not share an encoding); the rest by (key, value, type).
        if type(value) is str:
            strs = self._str_attrs.get(key)
            if strs is not None:
                cached = strs.get(value)
                if cached is not None:
                    return cached
            encoded = self._new_attr(key, value)  # (may clear the caches: look up again)
            self._str_attrs.setdefault(key, {})[value] = encoded
            return encoded
        if type(value) is int:
            ints = self._int_attrs.get(key)
            if ints is not None:
                cached = ints.get(value)
                if cached is not None:
                    return cached
            encoded = self._new_attr(key, value)
            self._int_attrs.setdefault(key, {})[value] = encoded
            return encoded
        cache_key = (key, value, type(value))
        found = self._attr_cache.get(cache_key)
        if found is not None:
            return found
        encoded = self._new_attr(key, value)
        self._attr_cache[cache_key] = encoded
        return encoded

    def _attributes(self, name: str, attributes: dict[str, AttrValue]) -> bytes:
        """The span's attributes (repeated field 9), whole sets cached when they repeat."""
        # First the last set of a span of this name (spans of one route repeat it): compared
        # item by item, no tuple built or hashed. Its values are all exact str or int.
        last = self._last.get(name)
        if last is not None:
            keys, olds, encoded = last
            if len(keys) == len(attributes):
                i = 0
                for key, value in attributes.items():
                    old = olds[i]
                    # (mostly the same objects: the attempt span's fixed attributes are a
                    # copy of one dict per route and endpoint)
                    if value is not old or key is not keys[i]:
                        if type(value) is not type(old) or value != old or key != keys[i]:
                            break
                    i += 1
                else:
                    return encoded
        if self._skip > 0:
            self._skip -= 1
            return self._each(attributes)
        values = tuple(attributes.values())
        for value in values:  # exact str and int only (True == 1 == 1.0 share a hash)
            kind = type(value)
            if kind is not str and kind is not int:
                return self._each(attributes)
        # Looked up by the values alone (one tuple built and hashed, not two); the keys are
        # checked against the entry's in order, without building their tuple.
        entry = self._set_cache.get(values)
        if entry is not None:
            keys = entry[0]
            if len(keys) == len(attributes):
                i = 0
                for key in attributes:
                    if key != keys[i]:
                        break
                    i += 1
                else:
                    self._misses = 0
                    self._remember(name, keys, values, entry[1])
                    return entry[1]
        encoded = self._each(attributes)
        if len(self._set_cache) >= _SET_CACHE_LIMIT:
            self._set_cache.clear()
        keys = tuple(attributes)
        self._set_cache[values] = (keys, encoded)
        self._remember(name, keys, values, encoded)
        self._misses += 1
        if self._misses >= _SET_MISSES:  # sets do not repeat now: encode attribute by attribute
            self._misses = 0
            self._skip = _SET_SKIP
        return encoded

    def _templated(self, template: AttrTemplate, attributes: dict[str, AttrValue]) -> bytes:
        """The attributes of a span recorded with `template`: its shared ones pre-encoded,
        only the varying ones looked up (the same bytes as encoding each in order)."""
        fixed, varying = self._template(template)
        if len(varying) == 2:  # (the usual attempt span: url.full and the status vary)
            key0, key1 = varying
            return b"".join(
                (
                    fixed[0],
                    self._vary(template, 0, key0, attributes[key0]),
                    fixed[1],
                    self._vary(template, 1, key1, attributes[key1]),
                    fixed[2],
                )
            )
        # fixed[0] varying[0] fixed[1] varying[1] ... fixed[n]
        parts = [fixed[0]]
        i = 0
        for key in varying:
            parts.append(self._vary(template, i, key, attributes[key]))
            i += 1
            parts.append(fixed[i])
        return b"".join(parts)

    def _template(self, template: AttrTemplate) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
        encoded = template.encoded
        if encoded is None:
            encoded = template.encoded = self._template_pieces(template)
        return encoded

    def _vary(self, template: AttrTemplate, i: int, key: str, value: AttrValue) -> bytes:
        """The encoded varying attribute `i` of a templated span: the last one's when the
        value is the same (same type, equal)."""
        old = template.last_values[i]
        if value is old or (type(value) is type(old) and value == old):
            return template.last_encoded[i]
        encoded = self._attr(key, value)
        template.last_values[i] = value
        template.last_encoded[i] = encoded
        return encoded

    def _template_pieces(self, template: AttrTemplate) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
        fixed: list[bytes] = []
        varying: list[str] = []
        run: list[bytes] = []
        for key, value in template.items:
            if value is None:
                fixed.append(b"".join(run))
                varying.append(key)
                run = []
            else:
                run.append(_field(b"\x4a", _key_value(key, value)))
        fixed.append(b"".join(run))
        return tuple(fixed), tuple(varying)

    def _remember(
        self, name: str, keys: tuple[str, ...], values: tuple[AttrValue, ...], encoded: bytes
    ) -> None:
        last = self._last
        if len(last) >= _SET_CACHE_LIMIT and name not in last:
            last.clear()
        last[name] = (keys, values, encoded)

    def _each(self, attributes: dict[str, AttrValue]) -> bytes:
        # self._attr, not a bound-method local: compiled by mypyc that is a direct native call
        return b"".join([self._attr(key, value) for key, value in attributes.items()])

    def _new_attr(self, key: str, value: AttrValue) -> bytes:
        """The encoded attribute, counted against the cache limit (all caches cleared when
        reached: high-cardinality values such as paths must not grow them)."""
        if self._attr_count >= _CACHE_LIMIT:
            self._attr_cache.clear()
            self._str_attrs.clear()
            self._int_attrs.clear()
            self._attr_count = 0
        self._attr_count += 1
        return _field(b"\x4a", _key_value(key, value))

    def _head(self, name: str, kind: int) -> bytes:
        """The span's name and kind fields and the start time's tag (one piece per name)."""
        cached = self._name_cache.get(name)
        if cached is not None and cached[0] == kind:
            return cached[1]
        if len(self._name_cache) >= _CACHE_LIMIT:
            self._name_cache.clear()
        encoded = _field(b"\x2a", _utf8(name)) + b"\x30" + _varint(kind) + b"\x39"
        self._name_cache[name] = (kind, encoded)
        return encoded

    def _span(self, span: SpanRecord) -> bytes:
        tracestate = span.tracestate
        state = _field(b"\x1a", _utf8(tracestate)) if tracestate else b""
        flags = span.flags & 0xFF
        parent = span.parent_span_id
        if parent:
            parent_tag = b"\x22\x08"
            flags |= _FLAG_HAS_REMOTE | _FLAG_REMOTE
        else:
            parent_tag = b""
        status = b""
        if span.status or span.status_message:
            status = b"\x18" + _SMALL_VARINTS[span.status]
            if span.status_message:
                status = _field(b"\x12", _utf8(span.status_message)) + status
            status = _field(b"\x7a", status)
        encoded_flags = self._flags.get(flags)
        if encoded_flags is None:
            encoded_flags = b"\x85\x01" + _PACK_I(flags)
            if len(self._flags) < 64:
                self._flags[flags] = encoded_flags
        attributes = span.attributes
        template = span.template
        if template is not None and len(template.items) == len(attributes):
            encoded_attributes = self._templated(template, attributes)
        else:
            encoded_attributes = self._attributes(span.name, attributes)
        # one join of a tuple (no list grown per field); empty pieces are fields left out
        return b"".join(
            (
                b"\x0a\x10",
                span.trace_id,
                b"\x12\x08",
                span.span_id,
                state,
                parent_tag,
                parent,
                self._head(span.name, span.kind),
                _PACK_TIMES(span.start_ns, 0x41, span.end_ns),
                encoded_attributes,
                status,
                encoded_flags,
            )
        )


class _Malformed(Exception):
    pass


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> Iterable[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of one message; raises _Malformed."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos : pos + size], "little"), pos + size
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            raise _Malformed
        if pos > len(data) or number == 0:
            raise _Malformed
        yield number, wire, value


def rejected_spans(body: bytes) -> int:
    """`partial_success.rejected_spans` of an ExportTraceServiceResponse; 0 if absent or the body
    is not protobuf (a lenient server's 2xx text: nothing to learn)."""
    rejected = 0
    try:
        for number, wire, value in _fields(body):
            if number == 1 and wire == 2 and isinstance(value, bytes):  # partial_success
                for inner, inner_wire, count in _fields(value):
                    if inner == 1 and inner_wire == 0 and isinstance(count, int):
                        rejected = count  # int64: the last value of a field wins
    except _Malformed:
        return 0
    if rejected >= 1 << 63:
        rejected -= 1 << 64
    return max(rejected, 0)
