"""Entry points: OTLP request bytes (protobuf or JSON) -> DecodedBatch + canonical protobuf."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.otlp.columns import DecodedBatch, Signal
from collector.otlp.errors import InvalidRequest
from collector.otlp.metrics import decode_metrics
from collector.otlp.traces import decode_traces

__all__ = ["decode_protobuf", "decode_request", "parse_protobuf", "request_from_json"]

_REQUEST_TYPES: dict[Signal, type[Message]] = {
    Signal.TRACES: trace_service_pb2.ExportTraceServiceRequest,
    Signal.METRICS: metrics_service_pb2.ExportMetricsServiceRequest,
}
_DECODERS: dict[Signal, Callable[[Any], DecodedBatch]] = {
    Signal.TRACES: decode_traces,
    Signal.METRICS: decode_metrics,
}
# JSON fields holding ids: OTLP/JSON carries them as hex, proto3 JSON expects base64.
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def parse_protobuf(signal: Signal, body: bytes) -> Any:
    """Parse a binary export request; InvalidRequest names what is wrong."""
    message = _REQUEST_TYPES[signal]()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidRequest(f"malformed protobuf {message.DESCRIPTOR.name}: {exc}") from exc
    return message


def decode_protobuf(signal: Signal, body: bytes) -> DecodedBatch:
    """Binary request -> columns (used by receivers and by spool replay)."""
    return _DECODERS[signal](parse_protobuf(signal, body))


def request_from_json(signal: Signal, body: bytes) -> Any:
    """OTLP/JSON (hex ids, lowerCamelCase, int64 as string or number) -> request message."""
    try:
        return _request_from_json(signal, body)
    except RecursionError as exc:
        # [[[[...]]]] past the interpreter's recursion limit (in json.loads or in the walks
        # after it): a 500 and a logged traceback from the HTTP receiver before
        raise InvalidRequest("malformed JSON: nested too deeply") from exc


def _request_from_json(signal: Signal, body: bytes) -> Any:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidRequest("malformed JSON: the request must be an object")
    _hex_ids_to_base64(document)
    message = _REQUEST_TYPES[signal]()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, OverflowError) as exc:
        # (OverflowError: a number such as 1e400, which json reads as infinity, in an int field)
        raise InvalidRequest(f"invalid OTLP JSON: {exc}") from exc
    except SystemError as exc:  # upb on a field name with a lone surrogate ("\ud800")
        raise InvalidRequest("invalid OTLP JSON: a field name is not valid Unicode") from exc
    return message


def decode_request(signal: Signal, body: bytes, *, is_json: bool) -> tuple[DecodedBatch, bytes]:
    """Decode a request body; returns the columns and the protobuf bytes to spool."""
    if not is_json:
        message = parse_protobuf(signal, body)
        return _DECODERS[signal](message), body
    message = request_from_json(signal, body)
    return _DECODERS[signal](message), message.SerializeToString()


def _hex_ids_to_base64(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = _hex_to_base64(key, value)
            elif isinstance(value, dict | list):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _hex_ids_to_base64(item)


def _hex_to_base64(key: str, value: str) -> str:
    try:
        raw = binascii.unhexlify(value)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"invalid OTLP JSON: {key} {value[:40]!r} is not hex") from exc
    return base64.b64encode(raw).decode("ascii")
