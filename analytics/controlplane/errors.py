"""The control plane's exception hierarchy; the router maps each to its `status` and `reason`.

ControlPlaneError(status, reason)
├── Unauthenticated         401  unauthenticated     no credentials presented
├── Forbidden               403  forbidden           bad credentials, or not allowed
├── NotFound                404  not_found           no such service/version/instance
├── Conflict                409  conflict            stale version or nonce
├── InvalidPolicy           422  invalid_policy      carries every problem in `problems`
├── InvalidRequest          422  invalid_request     bad CSR, bad parameters
└── Unavailable             503  unavailable         the store cannot be reached
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "Conflict",
    "ControlPlaneError",
    "Forbidden",
    "InvalidPolicy",
    "InvalidRequest",
    "NotFound",
    "Unauthenticated",
    "Unavailable",
]


class ControlPlaneError(Exception):
    """Base of every error the control-plane API turns into a response."""

    status: int = 500
    reason: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(ControlPlaneError):
    status = 401
    reason = "unauthenticated"


class Forbidden(ControlPlaneError):
    status = 403
    reason = "forbidden"


class NotFound(ControlPlaneError):
    status = 404
    reason = "not_found"


class Conflict(ControlPlaneError):
    status = 409
    reason = "conflict"


class InvalidRequest(ControlPlaneError):
    status = 422
    reason = "invalid_request"


class InvalidPolicy(ControlPlaneError):
    """A policy document failed validation; `problems` lists every one of them."""

    status = 422
    reason = "invalid_policy"

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the policy document")
        self.problems = tuple(problems)


class Unavailable(ControlPlaneError):
    status = 503
    reason = "unavailable"
