"""Errors raised while receiving OTLP data; each carries the HTTP status a receiver answers with.

OtlpError (status, grpc_code)
├── InvalidRequest        400 / INVALID_ARGUMENT   malformed protobuf or JSON, bad ids
├── UnsupportedMediaType  415 / INVALID_ARGUMENT   content type we do not speak
├── PayloadTooLarge       413 / RESOURCE_EXHAUSTED body (or inflated body) over the limit
└── Overloaded            503 / UNAVAILABLE        spool full or shutting down: retry later
"""

from __future__ import annotations

__all__ = ["InvalidRequest", "OtlpError", "Overloaded", "PayloadTooLarge", "UnsupportedMediaType"]


class OtlpError(Exception):
    """Base of receive errors; `status` is the HTTP code, `reason` a stable metric label."""

    status = 500
    reason = "internal"


class InvalidRequest(OtlpError):
    """The request body cannot be decoded (never retried by clients)."""

    status = 400
    reason = "invalid"


class UnsupportedMediaType(OtlpError):
    """Content-Type or Content-Encoding we do not accept."""

    status = 415
    reason = "media_type"


class PayloadTooLarge(OtlpError):
    """The body, or its decompressed form, is over the configured limit."""

    status = 413
    reason = "too_large"


class Overloaded(OtlpError):
    """We cannot take the data now; the client should retry after `retry_after_s`."""

    status = 503
    reason = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
