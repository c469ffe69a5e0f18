"""Per-route fallback: when the route's upstream cannot take the request (endpoints ejected,
none healthy, breaker limits full), answer with a configured response or send the request to a
fallback service instead. Sits outside the route's timeout/retry, so it sees their final error.

Fallbacks are marked: `meshlens.fallback=true` (+ reason) on the span, `x-meshlens-fallback:
<reason>` on the response, and a per-route count in /stats and /metrics. With `enforce: false`
(observe-only) the failure passes through unchanged and the span records
`meshlens.fallback.would_serve=<reason>`; it is counted as `observed`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from sidecar.errors import ProxyError
from sidecar.http import Headers, Request, Response, with_header
from sidecar.stack import Handler, Layer

__all__ = [
    "DEFAULT_ON",
    "FALLBACK_HEADER",
    "TRIGGERS",
    "FallbackConfig",
    "FallbackResponse",
    "FallbackStats",
    "fallback_layer",
]

logger = logging.getLogger(__name__)

FALLBACK_HEADER = "x-meshlens-fallback"
_ATTEMPT = "meshlens.attempt"  # set by telemetry's attempt layer (one CLIENT span per attempt)
# ProxyError reasons a fallback may answer: the upstream could not be asked, or failed
TRIGGERS: frozenset[str] = frozenset(
    {
        "circuit_open",
        "no_healthy_upstream",
        "overflow",
        "connect_failure",
        "upstream_timeout",
        "per_try_timeout",
        "upstream_reset",
        "retry_budget_exhausted",
    }
)
DEFAULT_ON: frozenset[str] = frozenset({"circuit_open", "no_healthy_upstream", "overflow"})
# failures raised before the request body was read (first attempt): a stream can still be sent
_UNSENT = frozenset({"circuit_open", "no_healthy_upstream", "overflow", "connect_failure"})


@dataclass(frozen=True, slots=True)
class FallbackResponse:
    """A canned answer, e.g. 200 with a cached or empty list."""

    status: int = 200
    headers: Headers = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError(f"fallback status must be in 200..599, got {self.status}")
        for name, _ in self.headers:
            if name != name.lower() or not name:
                raise ValueError(f"fallback header name {name!r} must be lower-case")


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    """Exactly one of `response` (answer directly) or `upstream` (route there instead)."""

    on: frozenset[str] = DEFAULT_ON
    response: FallbackResponse | None = None
    upstream: str = ""
    enforce: bool = True  # False: record meshlens.fallback.would_serve, let the failure through

    def __post_init__(self) -> None:
        if (self.response is None) == (not self.upstream):
            raise ValueError("a fallback needs exactly one of response or upstream")
        unknown = sorted(self.on - TRIGGERS)
        if unknown or not self.on:
            raise ValueError(f"fallback on: {unknown} not in {sorted(TRIGGERS)}")


@dataclass(slots=True)
class FallbackStats:
    """Fallbacks taken per trigger reason, those that could not be taken (streamed body), and
    those an observe-only fallback would have served."""

    taken: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    observed: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict[str, object]:
        out: dict[str, object] = {"taken": dict(self.taken), "skipped": self.skipped}
        if self.observed:
            out["observed"] = dict(self.observed)
        return out


def fallback_layer(
    config: FallbackConfig, *, service: Handler | None = None, stats: FallbackStats | None = None
) -> Layer:
    """Answer the route's listed upstream failures with the fallback (see module docstring).

    `service` is the handler for `config.upstream` (timeout, balance, breaker... to it).
    """
    if config.upstream and service is None:
        raise ValueError("a fallback upstream needs its handler")
    counts = stats if stats is not None else FallbackStats()
    canned = config.response

    def wrap(inner: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            try:
                return await inner(request)
            except ProxyError as exc:
                if exc.reason not in config.on:
                    raise
                context = request.context
                if not config.enforce:
                    counts.observed[exc.reason] = counts.observed.get(exc.reason, 0) + 1
                    context.attributes["meshlens.fallback.would_serve"] = exc.reason
                    raise
                if (
                    canned is None
                    and not request.replayable
                    and (context.attempt > 1 or exc.reason not in _UNSENT)
                ):
                    counts.skipped += 1  # the streamed body may be gone: cannot resend it
                    raise
                counts.taken[exc.reason] = counts.taken.get(exc.reason, 0) + 1
                attrs = context.attributes
                attrs["meshlens.fallback"] = True
                attrs["meshlens.fallback.reason"] = exc.reason
                # The attempt span already ended with the upstream's error. Without the attempt
                # marker, the fallback service's attempt is numbered 1 (not counted as a retry),
                # and a canned answer gets one CLIENT span of its own from the telemetry layer,
                # both carrying the fallback marks (telemetry/exchange.py).
                attrs.pop(_ATTEMPT, None)
                if canned is not None:
                    headers = with_header(canned.headers, FALLBACK_HEADER, exc.reason)
                    return Response(canned.status, headers, canned.body)
                assert service is not None
                attrs["meshlens.fallback.upstream"] = config.upstream
                context.upstream = config.upstream
                context.endpoint = None
                context.attempt = 1
                context.previous_endpoints = []
                context.deadline = None  # the fallback's own timeout applies
                response = await service(request)
                headers = with_header(response.headers, FALLBACK_HEADER, exc.reason)
                return replace(response, headers=headers)

        return handle

    return wrap
