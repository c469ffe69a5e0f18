"""The sidecar's exception hierarchy; each error carries the HTTP status to send and a reason.

    ProxyError(status, reason)
    ├── DownstreamError                 the caller sent something we refuse (never forwarded)
    │   ├── BadRequest          400  bad_request
    │   ├── HeadersTooLarge     431  headers_too_large
    │   └── BodyTooLarge        413  body_too_large
    ├── NoRoute                 404  no_route
    ├── NoHealthyUpstream       503  no_healthy_upstream
    ├── UpstreamTimeout         504  upstream_timeout      (request deadline, all attempts)
    │   └── PerTryTimeout       504  per_try_timeout
    ├── UpstreamConnectError    503  connect_failure       (refused, unreachable, connect timeout)
    ├── UpstreamReset           502  upstream_reset        (closed or reset mid-exchange)
    ├── UpstreamProtocolError   502  upstream_protocol_error
    ├── Overflow                503  overflow              (breaker: connections/pending/requests)
    ├── CircuitOpen             503  circuit_open          (endpoint ejected, no alternative)
    ├── RetryBudgetExhausted    503  retry_budget_exhausted (only raised when no response to return)
    ├── RateLimited             429  rate_limited
    ├── Forbidden               403  rbac_denied
    ├── NotLocal                403  not_local             (a listener for this host's peers only)
    ├── Unauthenticated         401  unauthenticated
    └── FaultAbort              (configured) fault_abort

Proxy-generated responses carry `x-meshlens-error: <reason>` (see layers/proxy_errors.py) so they
are never mistaken for the application's own errors.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "BodyTooLarge",
    "CircuitOpen",
    "DownstreamError",
    "FaultAbort",
    "Forbidden",
    "HeadersTooLarge",
    "NoHealthyUpstream",
    "NoRoute",
    "NotLocal",
    "Overflow",
    "PerTryTimeout",
    "ProxyError",
    "RateLimited",
    "RetryBudgetExhausted",
    "Unauthenticated",
    "UpstreamConnectError",
    "UpstreamProtocolError",
    "UpstreamReset",
    "UpstreamTimeout",
]

ERROR_HEADER = "x-meshlens-error"


class ProxyError(Exception):
    """Base of every error the proxy turns into its own response."""

    status: int = 502
    reason: str = "proxy_error"

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message or self.reason.replace("_", " "))
        if status is not None:
            self.status = status


class DownstreamError(ProxyError):
    status = 400
    reason = "bad_request"


class BadRequest(DownstreamError):
    status = 400
    reason = "bad_request"


class HeadersTooLarge(DownstreamError):
    status = 431
    reason = "headers_too_large"


class BodyTooLarge(DownstreamError):
    status = 413
    reason = "body_too_large"


class NoRoute(ProxyError):
    status = 404
    reason = "no_route"


class NoHealthyUpstream(ProxyError):
    status = 503
    reason = "no_healthy_upstream"


class UpstreamTimeout(ProxyError):
    status = 504
    reason = "upstream_timeout"

    def __init__(self, message: str = "", *, after_s: float | None = None) -> None:
        super().__init__(message or (f"upstream timed out after {after_s:g}s" if after_s else ""))
        self.after_s = after_s


class PerTryTimeout(UpstreamTimeout):
    reason = "per_try_timeout"


class UpstreamConnectError(ProxyError):
    status = 503
    reason = "connect_failure"


class UpstreamReset(ProxyError):
    status = 502
    reason = "upstream_reset"


class UpstreamProtocolError(ProxyError):
    status = 502
    reason = "upstream_protocol_error"


class Overflow(ProxyError):
    status = 503
    reason = "overflow"


class CircuitOpen(ProxyError):
    status = 503
    reason = "circuit_open"


class RetryBudgetExhausted(ProxyError):
    status = 503
    reason = "retry_budget_exhausted"


class RateLimited(ProxyError):
    status = 429
    reason = "rate_limited"


class Forbidden(ProxyError):
    status = 403
    reason = "rbac_denied"


class NotLocal(ProxyError):
    status = 403
    reason = "not_local"


class Unauthenticated(ProxyError):
    status = 401
    reason = "unauthenticated"


class FaultAbort(ProxyError):
    status = 503
    reason = "fault_abort"
