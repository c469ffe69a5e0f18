"""OTLP/HTTP transport: POST protobuf bodies to a collector, with OTLP's retry rules.

Bodies go uncompressed by default, as the OpenTelemetry SDKs send them
(OTEL_EXPORTER_OTLP_COMPRESSION defaults to none): a sidecar usually exports to a node-local
collector, where gzip costs CPU per span and saves nothing that matters. `compression="gzip"`
(`meshlens sidecar --otlp-compression gzip`) compresses them at level 1.

Retries only what the OTLP spec calls retryable (429, 502, 503, 504, and connection failures),
honours Retry-After (seconds or HTTP date), else exponential backoff with full jitter.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from sidecar.errors import ProxyError
from sidecar.http import Body, Endpoint, Request, RequestContext, header_value, parse_digits
from sidecar.stack import Clock, Sleep, monotonic
from sidecar.upstream import UpstreamConfig, UpstreamPool

__all__ = [
    "COMPRESSIONS",
    "RETRYABLE_STATUSES",
    "ExportOutcome",
    "HttpTransport",
    "RetryPolicy",
    "Transport",
    "TransportError",
    "TransportResult",
    "parse_retry_after",
    "send_with_retry",
]

RETRYABLE_STATUSES = frozenset((429, 502, 503, 504))
COMPRESSIONS = ("none", "gzip")  # the values OTEL_EXPORTER_OTLP_COMPRESSION allows
_MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # the OTLP spec caps responses at 4 MiB


class TransportError(Exception):
    """The collector could not be reached or did not answer in time (retryable)."""


@dataclass(frozen=True, slots=True)
class TransportResult:
    status: int
    retry_after: str | None = None
    body: bytes = b""


class Transport(Protocol):
    """Sends one OTLP/HTTP request; raises TransportError when no HTTP answer came back."""

    async def post(self, path: str, body: bytes) -> TransportResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not 0 < self.backoff_base_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_base_s <= backoff_max_s")


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    """`result` is ok | rejected (non-retryable answer) | failed (retries or time ran out)."""

    result: str
    attempts: int
    status: int = 0
    body: bytes = b""


class HttpTransport:
    """OTLP/HTTP client for one collector base URL (e.g. http://127.0.0.1:4318).

    Plain http:// goes through the sidecar's own pooled HTTP/1.1 client (sidecar/upstream.py), so
    the sidecar process loads no HTTP client library; https:// uses aiohttp (imported only then).
    """

    def __init__(
        self, base_url: str, *, timeout_s: float = 10.0, compression: str = "none"
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"collector URL must be http(s)://host:port, got {base_url!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be none or gzip, got {compression!r}")
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._gzip = compression == "gzip"
        self._tls = base_url.startswith("https://")
        self._session: Any = None  # aiohttp.ClientSession, https only
        self._pool: UpstreamPool | None = None
        parts = urlsplit(self._base)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"collector URL has an invalid port: {base_url!r}") from exc
        if not parts.hostname:
            raise ValueError(f"collector URL has no host: {base_url!r}")
        self._endpoint = Endpoint(parts.hostname, port or (443 if self._tls else 80))
        self._authority = parts.netloc.rpartition("@")[2]
        self._prefix = parts.path

    async def post(self, path: str, body: bytes) -> TransportResult:
        headers: list[tuple[str, str]] = [("content-type", "application/x-protobuf")]
        if self._gzip:
            body = gzip.compress(body, compresslevel=1)
            headers.append(("content-encoding", "gzip"))
        if self._tls:
            return await self._post_aiohttp(path, body, dict(headers))
        if self._pool is None:
            self._pool = UpstreamPool(
                UpstreamConfig(max_idle_per_endpoint=4, response_timeout_s=self._timeout_s)
            )
        context = RequestContext(
            upstream="collector",
            endpoint=self._endpoint,
            connect_timeout_s=self._timeout_s,
            idle_timeout_s=self._timeout_s,
        )
        request = Request(
            "POST", self._prefix + path, tuple(headers), body, self._authority, context=context
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._pool(request)
                answer = await _read_capped(response.body)
        except (ProxyError, TimeoutError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return TransportResult(
            response.status, header_value(response.headers, "retry-after"), answer
        )

    async def _post_aiohttp(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> TransportResult:
        import aiohttp  # only for https collectors: ~15 MB the plain-http sidecar never loads

        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.post(self._base + path, data=body, headers=headers) as resp:
                answer = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    answer += chunk
                    if len(answer) > _MAX_RESPONSE_BYTES:
                        break  # only partial_success is read from it; never hold more
                return TransportResult(resp.status, resp.headers.get("Retry-After"), bytes(answer))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def _read_capped(body: Body) -> bytes:
    """The response body, cut at the OTLP cap (a dropped stream closes its connection)."""
    if isinstance(body, bytes):
        return body[:_MAX_RESPONSE_BYTES]
    answer = bytearray()
    while chunk := await body.read():
        answer += chunk
        if len(answer) > _MAX_RESPONSE_BYTES:
            break  # only partial_success is read from it; never hold more
    return bytes(answer)


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait per a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    seconds = parse_digits(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


async def send_with_retry(
    transport: Transport,
    path: str,
    body: bytes,
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = monotonic,
    rand: Callable[[], float] = random.random,
    give_up_at: float | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> ExportOutcome:
    """POST `body`, retrying retryable failures; never sleeps past `give_up_at` (a clock time)."""
    status = 0
    for attempt in range(1, policy.max_attempts + 1):
        retry_after: float | None = None
        try:
            result = await transport.post(path, body)
        except TransportError:
            status, why = 0, "transport_error"
        else:
            status = result.status
            if 200 <= status < 300:
                return ExportOutcome("ok", attempt, status, result.body)
            if status not in RETRYABLE_STATUSES:
                return ExportOutcome("rejected", attempt, status, result.body)
            why = str(status)
            retry_after = parse_retry_after(result.retry_after)
        if attempt == policy.max_attempts:
            break
        if retry_after is not None:
            delay = min(retry_after, policy.max_retry_after_s)
        else:  # full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]
            cap = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempt - 1))
            delay = rand() * cap
        if give_up_at is not None and clock() + delay > give_up_at:
            break
        if on_retry is not None:
            on_retry(why)
        await sleep(delay)
    return ExportOutcome("failed", attempt, status)
