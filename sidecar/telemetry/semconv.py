"""HTTP semantic-convention helpers for the telemetry layers: method normalisation, span names,
span status rules, header injection of our trace context, address splitting, streamed-body watch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, cast

from sidecar.http import BodyStream, Headers, parse_digits
from sidecar.telemetry.context import (
    B3_HEADERS,
    TRACE_HEADERS,
    format_b3_headers,
    format_traceparent,
)
from sidecar.telemetry.spans import STATUS_ERROR, STATUS_UNSET

__all__ = [
    "ObservedBody",
    "client_status",
    "inject",
    "normalize_method",
    "peer_from_spiffe",
    "server_status",
    "span_name",
    "split_host_port",
]

_KNOWN_METHODS: Final = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE")
)


def normalize_method(method: str) -> str:
    """The method if it is a known one, else `_OTHER` (keeps metric labels a closed set)."""
    return method if method in _KNOWN_METHODS else "_OTHER"


def span_name(method: str, route: str) -> str:
    """`{method} {route}` (or just the method); `HTTP` stands in for an unknown method."""
    verb = "HTTP" if method == "_OTHER" else method
    if not route:
        return verb
    names = _SPAN_NAMES.get(route)  # (built once per route and method: read per span)
    if names is None:
        if len(_SPAN_NAMES) >= _SPAN_NAMES_MAX:
            _SPAN_NAMES.clear()
        names = _SPAN_NAMES[route] = {}
    name = names.get(verb)
    if name is None:
        name = names[verb] = f"{verb} {route}"
    return name


_SPAN_NAMES: Final[dict[str, dict[str, str]]] = {}
_SPAN_NAMES_MAX: Final = 1024


def client_status(status: int, proxy_error: str) -> int:
    """Client span status: error for 4xx/5xx and for anything the proxy itself failed."""
    return STATUS_ERROR if status >= 400 or proxy_error else STATUS_UNSET


def server_status(status: int, proxy_error: str) -> int:
    """Server span status: 4xx is the caller's fault (unset); 5xx and proxy errors are errors."""
    return STATUS_ERROR if status >= 500 or proxy_error else STATUS_UNSET


def inject(headers: Headers, trace_id: bytes, span_id: bytes, flags: int, state: str) -> Headers:
    """`headers` with our traceparent (and tracestate; B3 too if the caller spoke B3) replacing
    any trace headers it had."""
    # `item` as an object: compiled, a tuple[str, str] variable is unpacked, and appending it
    # would build a new tuple for every header kept
    items: tuple[object, ...] = headers
    for item in items:
        if cast("tuple[str, str]", item)[0] in TRACE_HEADERS:
            break
    else:  # no trace headers to replace (the usual request): one tuple concatenation
        traceparent = ("traceparent", format_traceparent(trace_id, span_id, flags))
        ours: Headers = (traceparent, ("tracestate", state)) if state else (traceparent,)
        return headers + ours
    kept: list[object] = []
    b3 = False
    for item in items:
        name = cast("tuple[str, str]", item)[0]
        if name in TRACE_HEADERS:
            b3 = b3 or name in B3_HEADERS
        else:
            kept.append(item)
    kept.append(("traceparent", format_traceparent(trace_id, span_id, flags)))
    if state:
        kept.append(("tracestate", state))
    if b3:
        kept.extend(format_b3_headers(trace_id, span_id, flags))
    return cast(Headers, tuple(kept))


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or a bare host -> (host, port or 0)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = address.rpartition(":")
        if not sep or ":" in host:
            return address, 0
    return host, parse_digits(port, 5) or 0


def peer_from_spiffe(identity: str) -> str:
    """The service account of `spiffe://td/ns/<ns>/sa/<sa>` (our peer's workload), else ""."""
    if not identity.startswith("spiffe://"):
        return ""
    parts = identity.split("/")
    try:
        return parts[parts.index("sa") + 1]
    except (ValueError, IndexError):
        return ""


class ObservedBody:
    """A BodyStream wrapper that counts bytes and calls `on_end(nbytes, error)` exactly once:
    at EOF, when a read fails, or when dropped unfinished (the downstream went away), so no
    span stays open. `on_end` must not refer back to this object (that would delay the drop)."""

    __slots__ = ("_done", "_inner", "_on_end", "nbytes")

    def __init__(self, inner: BodyStream, on_end: Callable[[int, str], None]) -> None:
        self._inner = inner
        self._on_end = on_end
        self._done = False
        self.nbytes = 0

    @property
    def length(self) -> int | None:
        return self._inner.length

    async def read(self) -> bytes:
        try:
            chunk = await self._inner.read()
        except BaseException as exc:
            reason = getattr(exc, "reason", "") or type(exc).__name__
            self.finish(reason)
            raise
        if chunk:
            self.nbytes += len(chunk)
        else:
            self.finish("")
        return chunk

    def __del__(self) -> None:
        if not self._done:
            self.finish("body_abandoned")

    def finish(self, error: str) -> None:
        if not self._done:
            self._done = True
            self._on_end(self.nbytes, error)
