"""OTLP decoding: protobuf/JSON export requests -> column batches for the store tables.

This is the first step of the collector flow (receiver -> decode -> spool -> batch -> store).
"""

from __future__ import annotations

from collector.otlp.columns import DecodedBatch, Signal
from collector.otlp.decode import decode_request, request_from_json
from collector.otlp.errors import (
    InvalidRequest,
    OtlpError,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
)

__all__ = [
    "DecodedBatch",
    "InvalidRequest",
    "OtlpError",
    "Overloaded",
    "PayloadTooLarge",
    "Signal",
    "UnsupportedMediaType",
    "decode_request",
    "request_from_json",
]
