"""Hand-encoded span batches decode with opentelemetry-proto to exactly what was recorded."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2

from sidecar.http import AttrValue
from sidecar.telemetry.otlp import TraceEncoder, field
from sidecar.telemetry.spans import KIND_CLIENT, KIND_SERVER, STATUS_ERROR, SpanRecord

RESOURCE = (("service.name", "orders"), ("service.instance.id", "orders-1"))


def _attrs(span: trace_pb2.Span) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    for kv in span.attributes:
        field = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, field)
    return out


def _decode(data: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


def _span(**overrides: Any) -> SpanRecord:
    base = SpanRecord(
        trace_id=bytes(range(1, 17)),
        span_id=bytes(range(20, 28)),
        parent_span_id=bytes(range(40, 48)),
        name="GET checkout",
        kind=KIND_CLIENT,
        start_ns=1_700_000_000_123_456_789,
        end_ns=1_700_000_000_223_456_789,
        flags=1,
        status=STATUS_ERROR,
        attributes={
            "http.request.method": "GET",
            "server.port": 8080,
            "meshlens.retry.budget_exhausted": True,
            "ratio": 0.25,
            "negative": -3,
            "http.response.status_code": 503,
        },
        tracestate="vendor=abc",
        status_message="upstream said no",
    )
    return base._replace(**overrides)


def test_span_fields_survive_the_round_trip() -> None:
    encoder = TraceEncoder(RESOURCE, scope_version="0.1.0")
    span = _span()
    request = _decode(encoder.encode([span]))

    (resource_spans,) = request.resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource == dict(RESOURCE)
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "meshlens.sidecar" and scope_spans.scope.version == "0.1.0"
    (decoded,) = scope_spans.spans
    assert decoded.trace_id == span.trace_id
    assert decoded.span_id == span.span_id
    assert decoded.parent_span_id == span.parent_span_id
    assert decoded.trace_state == "vendor=abc"
    assert decoded.name == "GET checkout"
    assert decoded.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert decoded.start_time_unix_nano == span.start_ns
    assert decoded.end_time_unix_nano == span.end_ns
    assert decoded.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert decoded.status.message == "upstream said no"
    assert _attrs(decoded) == span.attributes
    # low byte = W3C flags; 0x100/0x200 = parent is remote (it lives in the app)
    assert decoded.flags == 0x301


def test_root_server_span_without_status_or_parent() -> None:
    encoder = TraceEncoder(RESOURCE)
    span = _span(kind=KIND_SERVER, parent_span_id=b"", status=0, status_message="", tracestate="")
    (decoded,) = _decode(encoder.encode([span])).resource_spans[0].scope_spans[0].spans
    assert decoded.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert decoded.parent_span_id == b""
    assert not decoded.HasField("status")
    assert decoded.flags == 0x01


def test_many_spans_keep_order_and_cached_attributes_stay_correct() -> None:
    encoder = TraceEncoder(RESOURCE)
    spans = [
        _span(span_id=i.to_bytes(8, "big"), attributes={"i": i, "same": "x", "flag": i % 2 == 0})
        for i in range(1, 301)
    ]
    decoded = _decode(encoder.encode(spans)).resource_spans[0].scope_spans[0].spans
    assert [int.from_bytes(s.span_id, "big") for s in decoded] == list(range(1, 301))
    assert [_attrs(s) for s in decoded] == [s.attributes for s in spans]


def test_bool_and_int_attribute_encodings_are_not_confused_by_the_cache() -> None:
    encoder = TraceEncoder(RESOURCE)
    first = _span(attributes={"v": 1})
    second = _span(attributes={"v": True})
    decoded = _decode(encoder.encode([first, second])).resource_spans[0].scope_spans[0].spans
    assert decoded[0].attributes[0].value.WhichOneof("value") == "int_value"
    assert decoded[1].attributes[0].value.WhichOneof("value") == "bool_value"


def test_empty_batch_is_a_valid_request() -> None:
    request = _decode(TraceEncoder(RESOURCE).encode([]))
    assert len(request.resource_spans) == 1
    assert len(request.resource_spans[0].scope_spans[0].spans) == 0


def test_a_lone_surrogate_costs_its_characters_not_the_batch() -> None:
    # A JWT's claims are JSON, whose escapes can name a lone surrogate ("sub": "\ud800"); as
    # enduser.id it failed the encoding of the whole batch (512 spans dropped as export_error).
    encoder = TraceEncoder(RESOURCE)
    odd = _span(
        span_id=b"\x01" * 8,
        name="GET \ud800",
        attributes={"enduser.id": "ali\ud800ce", "k\udfff": "v"},
        tracestate="v=\udc00",
        status_message="no \ud83d",
    )
    spans = _spans_of(encoder.encode([_span(), odd, _span(span_id=b"\x02" * 8)]))
    assert [s.span_id for s in spans] == [bytes(range(20, 28)), b"\x01" * 8, b"\x02" * 8]
    assert _attrs(spans[1]) == {"enduser.id": "ali?ce", "k?": "v"}
    assert (spans[1].name, spans[1].trace_state, spans[1].status.message) == (
        "GET ?",
        "v=?",
        "no ?",
    )
    assert _attrs(spans[2]) == _span().attributes


def test_rejected_spans_reads_partial_success_and_ignores_junk() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    from sidecar.telemetry.otlp import rejected_spans

    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 300
    response.partial_success.error_message = "too old"
    assert rejected_spans(response.SerializeToString()) == 300
    assert rejected_spans(ExportTraceServiceResponse().SerializeToString()) == 0
    assert rejected_spans(b"ok\n") == 0  # a lenient server's text body
    assert rejected_spans(b"\x0a\x05\x08") == 0  # truncated
    assert rejected_spans(b"\x0a\x02\x08\xff") == 0  # varint cut short


def test_attribute_cache_keeps_bool_int_float_and_str_apart() -> None:
    # One encoder, the same key with values that compare equal (True == 1 == 1.0) or look
    # alike ("1"): each keeps its own encoding, in either order, also after the cache is reset.
    for values in ((True, 1, 1.0, "1"), ("1", 1.0, 1, True)):
        encoder = TraceEncoder([("service.name", "web")])
        for _round in range(2):
            encoded = {type(v): encoder._attr("k", v) for v in values}
            fresh = TraceEncoder([("service.name", "web")])
            assert encoded == {type(v): fresh._attr("k", v) for v in values}
            assert len(set(encoded.values())) == 4
            encoder._attr_count = 10**9
            encoder._attr(f"other{_round}", "x")  # a new one over the limit clears the caches
            assert list(encoder._str_attrs) == [f"other{_round}"]
            assert not encoder._int_attrs and not encoder._attr_cache


def test_attribute_cache_is_bounded() -> None:
    encoder = TraceEncoder([("service.name", "web")])
    for n in range(3 * 4096):
        encoder._attr("url.path", f"/items/{n}")
        encoder._attr("n", n)
    cached = sum(len(v) for v in encoder._str_attrs.values()) + sum(
        len(v) for v in encoder._int_attrs.values()
    )
    assert 0 < cached <= 4096


def test_batch_bytes_equal_the_nested_fields() -> None:
    # encode() writes the nesting headers around one join; these are the nested fields it
    # stands for, for batches whose lengths take one, two and three varint bytes.
    encoder = TraceEncoder([("service.name", "web")], scope_version="1.0")
    for count in (0, 1, 3, 700):
        batch = [_span(name=f"GET /{n}", start_ns=n) for n in range(count)]
        spans = b"".join(field(b"\x12", encoder._span(s)) for s in batch)
        scope_spans = encoder._scope + spans
        expected = field(b"\x0a", encoder._resource + field(b"\x12", scope_spans))
        encoded = encoder.encode(batch)
        assert encoded == expected
        assert len(_decode(encoded).resource_spans[0].scope_spans[0].spans) == count


def _spans_of(data: bytes) -> list[trace_pb2.Span]:
    return list(_decode(data).resource_spans[0].scope_spans[0].spans)


def test_repeated_attribute_sets_encode_the_same_as_each_attribute() -> None:
    encoder = TraceEncoder(RESOURCE)
    base: dict[str, AttrValue] = {"http.request.method": "GET", "server.port": 80, "r": "api"}
    sets: list[dict[str, AttrValue]] = [
        base,
        dict(base),  # the same set again: from the cache
        {"http.request.method": "GET", "server.port": 80, "q": "api"},  # same values, other key
        base,  # and back
        {"http.request.method": "GET", "server.port": True, "r": "api"},  # bool: never cached
        {"http.request.method": "GET", "server.port": 1, "r": "api"},
        {"http.request.method": "GET", "server.port": True, "r": "api"},  # bool: never cached
        {"http.request.method": "GET", "server.port": 1.0, "r": "api"},  # float: never cached
        {"http.request.method": "GET", "server.port": 1, "r": "api"},
    ]
    spans = [_span(attributes=a) for a in sets]
    decoded = _spans_of(encoder.encode(spans))
    assert [_attrs(s) for s in decoded] == sets
    kinds = [s.attributes[1].value.WhichOneof("value") for s in decoded]
    assert kinds == ["int_value"] * 3 + ["int_value", "bool_value", "int_value"] + [
        "bool_value",
        "double_value",
        "int_value",
    ]
    fresh = TraceEncoder(RESOURCE)  # set by set in a new encoder: the same bytes
    assert encoder.encode(spans) == fresh.encode(spans)


def test_sets_of_equal_values_under_other_keys_or_key_orders_keep_their_own_keys() -> None:
    encoder = TraceEncoder(RESOURCE)
    sets: list[dict[str, AttrValue]] = [
        {"a": "x", "b": "x"},
        {"b": "x", "a": "x"},  # the same values: other key order
        {"a": "x", "b": "x"},
        {"a": "x", "c": "x"},
        {"a": "x", "b": "x", "c": "x"},
        {"a": "x", "b": "x"},
    ]
    decoded = _spans_of(encoder.encode([_span(attributes=a) for a in sets]))
    assert [[kv.key for kv in s.attributes] for s in decoded] == [list(a) for a in sets]


def test_attribute_sets_that_do_not_repeat_stop_the_set_cache_and_stay_correct() -> None:
    encoder = TraceEncoder(RESOURCE)
    spans = [_span(attributes={"url.full": f"http://a/items/{n}", "n": n}) for n in range(5000)]
    decoded = _spans_of(encoder.encode(iter(spans)))  # (not a list: the Python encoding)
    assert [_attrs(s) for s in decoded] == [s.attributes for s in spans]
    assert encoder._skip > 0  # 64 misses in a row: looked up no more for a while
    assert len(encoder._set_cache) <= 512


def test_varints_match_the_protobuf_rule_at_every_width() -> None:
    from sidecar.telemetry.otlp import _varint

    def reference(value: int) -> bytes:
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                return bytes(out)

    for value in (0, 1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 2**35 + 7, 2**63 - 1):
        assert _varint(value) == reference(value), value


def test_one_name_in_client_and_server_spans_keeps_each_kind_and_times() -> None:
    # the name, kind and start time tag are one cached piece per name: a name met with
    # another kind must not take the cached kind
    encoder = TraceEncoder(RESOURCE)
    kinds = [KIND_CLIENT, KIND_SERVER, KIND_SERVER, KIND_CLIENT, 1, KIND_CLIENT]
    spans = [_span(kind=kind, start_ns=n, end_ns=2**64 - 1 - n) for n, kind in enumerate(kinds)]
    for _round in range(2):
        decoded = _spans_of(encoder.encode(spans))
        assert [s.kind for s in decoded] == kinds
        assert [s.name for s in decoded] == ["GET checkout"] * len(kinds)
        assert [(s.start_time_unix_nano, s.end_time_unix_nano) for s in decoded] == [
            (n, 2**64 - 1 - n) for n in range(len(kinds))
        ]


def test_templated_attributes_encode_like_each_attribute_for_any_shape() -> None:
    # A template's shared values are pre-encoded and its varying ones (None) looked up per
    # span, remembering the last value: the bytes must be those of the plain encoding, for
    # templates with no, one, two and three varying keys, values changing or repeating,
    # including values equal across types (1, True, 1.0) and templates whose length differs
    # from the attributes (then unused).
    from sidecar.telemetry.spans import AttrTemplate

    shapes: list[tuple[tuple[str, AttrValue | None], ...]] = [
        (("a", "x"), ("b", 2)),
        (("a", "x"), ("v", None), ("b", 2)),
        (("a", "x"), ("v", None), ("b", 2), ("w", None)),
        (("v", None), ("a", "x"), ("w", None), ("b", 2), ("u", None)),
    ]
    values: list[AttrValue] = [1, 1, True, 1.0, "1", "/a", "/a", "/b", 200, 200, 503]
    for items in shapes:
        template = AttrTemplate(items)
        spans = []
        for n, value in enumerate(values):
            attributes = {
                key: (value if key == "v" else n if key == "w" else "u") if fixed is None else fixed
                for key, fixed in items
            }
            spans.append(_span(span_id=n.to_bytes(8, "big"), attributes=attributes))
        spans.append(_span(attributes={"a": "x"}))  # (length differs: encoded each)
        templated = [s._replace(template=template) for s in spans]
        for _round in range(2):
            encoder = TraceEncoder(RESOURCE)
            assert encoder.encode(templated) == TraceEncoder(RESOURCE).encode(spans)
            decoded = _spans_of(encoder.encode(templated))
            assert [_attrs(s) for s in decoded] == [s.attributes for s in spans]
